"""Template context of every page: the header's staff links and the portal-wide banners."""

from collections.abc import Callable

#: Banner data of the apps above ``orgs`` (which ``orgs`` must not import): each app registers,
#: in its ``AppConfig.ready()``, a context name and a callable ``(user) -> list`` of banner
#: entries, e.g. ``connections`` registers ``byok_revoked_banners`` (org admins of an org whose
#: key access is revoked). Only signed-in users get banners.
BANNER_PROVIDERS: dict[str, Callable] = {}


def register_banner(name: str, provider: Callable) -> None:
    BANNER_PROVIDERS[name] = provider


def navigation(request):
    """Which staff links the header shows, and the banners; computed once per request."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    context = {
        "nav_is_account_rep": user.is_account_rep,
        "nav_is_vendor_staff": user.is_staff,
    }
    for name, provider in BANNER_PROVIDERS.items():
        context[name] = provider(user)
    return context
