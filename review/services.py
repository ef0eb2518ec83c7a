"""Rules shared by the account reps' review of setup and re-encryption requests."""


def require_assignee(req, rep, *, refused: type[Exception]) -> None:
    """Only the rep who claimed an open request may act on it; ``refused`` says why not."""
    if req.status != "claimed":
        raise refused(
            f"Request #{req.pk} is {req.get_status_display().lower()}; claim it first."
            if req.status == "submitted"
            else f"Request #{req.pk} is already {req.get_status_display().lower()}."
        )
    if req.assignee_id != rep.pk:
        raise refused(f"Only the assignee ({req.assignee}) can do this.")
