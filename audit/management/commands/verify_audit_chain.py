"""``manage.py verify_audit_chain [--org ID]``: re-hash audit chains; name the first broken link.

Each chain is walked from its base (the genesis, or the first link retention kept) to its head,
re-hashing every record and checking every link, and against the signed hourly digests (a chain
rewritten with fresh hashes still contradicts them). Exit status 1 when any chain is broken.
"""

from django.core.management.base import BaseCommand, CommandError

from audit.chain import chain_name_for
from audit.digests import verify_chain
from audit.models import ChainHead


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
                first = head.base_sequence if head.sequence >= head.base_sequence else "-"
                self.stdout.write(
                    f"{head.chain}: intact (links {first}–{head.sequence})"
                    if head.sequence
                    else f"{head.chain}: intact (empty)"
                )
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
