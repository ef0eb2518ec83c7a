def navigation(request):
    """Which staff links the header shows; computed once per request."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {
        "nav_is_account_rep": user.is_account_rep,
        "nav_is_vendor_staff": user.is_staff,
    }
