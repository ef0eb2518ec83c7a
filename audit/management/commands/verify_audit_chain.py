"""``manage.py verify_audit_chain [--org ID]``: re-hash audit chains; name the first broken link.

Each chain is walked from its base (the genesis, or the first link retention kept) to its head,
re-hashing every record in its link's hash format (1: json.dumps text, before RFC 8785; 2: RFC
8785 canonical JSON, docs/audit-format.md) and checking every link, and against the signed
hourly digests (a chain rewritten with fresh hashes still contradicts them). An intact chain
also says how far its digests reach: the newest links wait for the next hourly digest. Exit
status 1 when any chain is broken.
"""

from django.core.management.base import BaseCommand, CommandError

from audit.chain import chain_name_for
from audit.digests import verify_chain
from audit.models import AuditEvent, ChainDigest, ChainHead


class Command(BaseCommand):
    help = "Verify the audit hash chains (all, or one organization's) and name the first break."

    def add_arguments(self, parser):
        parser.add_argument("--org", type=int, help="only this organization's chain (its id)")

    def handle(self, *args, org=None, **options):
        heads = ChainHead.objects.order_by("chain")
        if org is not None:
            from orgs.models import Organization

            if not Organization.objects.filter(pk=org).exists():
                raise CommandError(f"There is no organization {org}.")
            heads = heads.filter(chain=chain_name_for(org))
        breaks = []
        checked = 0
        for head in heads.iterator():
            checked += 1
            brk = verify_chain(head.chain)
            if brk is None:
                self.stdout.write(f"{head.chain}: intact {_describe(head)}")
            else:
                breaks.append(brk)
                self.stdout.write(self.style.ERROR(f"{head.chain}: BROKEN at {brk}"))
        if org is not None and checked == 0:
            self.stdout.write(f"Organization {org} has no audit events yet.")
        if breaks:
            raise CommandError(
                f"{len(breaks)} of {checked} audit chain(s) broken; first break: {breaks[0]}",
                returncode=1,
            )
        self.stdout.write(self.style.SUCCESS(f"{checked} audit chain(s) verified: all intact."))


def _describe(head: ChainHead) -> str:
    """``(links 1–12); signed up to link 10; the newest 2 not yet`` and the like."""
    if not head.sequence:
        return "(empty)"
    first = head.base_sequence if head.sequence >= head.base_sequence else "-"
    parts = [f"(links {first}–{head.sequence})"]
    legacy = AuditEvent.objects.filter(
        chain=head.chain, sequence__gte=head.base_sequence, hash_format=1
    ).count()
    if legacy:
        parts.append(f"{legacy} hashed in format 1, from before RFC 8785")
    signed = (
        ChainDigest.objects.filter(chain=head.chain)
        .order_by("-sequence")
        .values_list("sequence", flat=True)
        .first()
    )
    if signed is None:
        parts.append("no signed digest yet")
    elif signed < head.sequence:
        parts.append(f"signed up to link {signed}; the newest {head.sequence - signed} not yet")
    else:
        parts.append("all signed")
    return "; ".join(parts)
