"""Every change to vendor staff and their permissions, in the vendor chain.

Model signals, so a change is audited wherever it is made (the admin, a shell, a data fix):
a staff user created or deleted; ``is_staff`` / ``is_superuser`` / ``is_active`` changed; a
password set; groups and direct permissions added or removed (from either side of the
relation); a group created, renamed or deleted, or its permissions changed; an authenticator
created confirmed, confirmed, deactivated or deleted (a pending, never-confirmed set-up device is
not an authenticator yet: the set-up page creates one on GET). The principal is the
signed-in person of the request being served (``audit.request_context.current_request``), or
the operating-system user when there is no request. Events name people, groups and
permission codes; never a password hash or an authenticator's secret.

"Vendor staff" is what the person can do, not only the flag: ``is_staff``, ``is_superuser``, or
any permission through a group or directly (``security.mfa.is_vendor_staff``).

Not events: ``migrate`` setting the staff groups to their definition in code
(``orgs.staff_roles``, reviewed like any code change), which also runs on every fresh and
test database.
"""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.db.models.signals import (
    m2m_changed,
    post_delete,
    post_migrate,
    post_save,
    pre_delete,
    pre_save,
)
from django_otp.plugins.otp_totp.models import TOTPDevice

from audit.request_context import client_ip, current_request, user_agent
from audit.services import record_event, user_identity_for
from security.mfa import has_staff_permissions

USER_FLAGS = ("is_staff", "is_superuser", "is_active")
_WATCHED_USER_FIELDS = {*USER_FLAGS, "password"}
_STATE = "_staff_audit_state"
_quiet: ContextVar[bool] = ContextVar("staff_audit_quiet", default=False)


@contextmanager
def not_audited() -> Iterator[None]:
    """Changes made inside are the code's definition being applied, not someone's action."""
    token = _quiet.set(True)
    try:
        yield
    finally:
        _quiet.reset(token)


# --- Recording --------------------------------------------------------------------------------


def _operator_identity() -> dict:
    try:
        os_user = getpass.getuser()
    except (KeyError, OSError):  # no login name in a bare container
        os_user = "unknown"
    return {
        "type": "VendorOperator",
        "userName": f"os:{os_user}",
        "invokedBy": "command line, task or migration (no web request)",
    }


def _record(event_name: str, parameters: dict) -> None:
    if _quiet.get():
        return
    request = current_request()
    actor = getattr(request, "user", None)
    if actor is not None and not actor.is_authenticated:
        actor = None
    extra = {"source_ip": client_ip(request), "user_agent": user_agent(request)} if request else {}
    record_event(
        org=None,
        event_name=event_name,
        actor=actor,
        user_identity=user_identity_for(actor) if actor is not None else _operator_identity(),
        request_parameters=parameters,
        read_only=False,
        **extra,
    )


def _is_staff(user) -> bool:
    return bool(user.is_staff or user.is_superuser or has_staff_permissions(user, cached=False))


def _codes(permissions) -> list[str]:
    return sorted(f"{p.content_type.app_label}.{p.codename}" for p in permissions)


# --- Users --------------------------------------------------------------------------------


def user_before_save(sender, instance, raw=False, update_fields=None, **kwargs):
    fields = set(update_fields) if update_fields is not None else None
    if raw or (fields is not None and not fields & _WATCHED_USER_FIELDS):
        instance.__dict__.pop(_STATE, None)
        return
    before = None
    if not instance._state.adding and instance.pk is not None:
        before = sender._base_manager.filter(pk=instance.pk).values(*USER_FLAGS, "password").first()
    # Django re-hashes a password with a newer hasher at sign-in: not a change by anyone.
    rehash = fields == {"password"} and getattr(instance, "_password", None) is None
    instance.__dict__[_STATE] = {"before": before, "rehash": rehash}


def user_saved(sender, instance, created=False, raw=False, **kwargs):
    state = instance.__dict__.pop(_STATE, None)
    if raw or state is None:
        return
    before = state["before"]
    if before is None:
        if instance.is_staff or instance.is_superuser:
            _record(
                "CreateStaffUser",
                {"userName": instance.email, **{f: getattr(instance, f) for f in USER_FLAGS}},
            )
        return
    changes = {
        f: {"from": before[f], "to": getattr(instance, f)}
        for f in USER_FLAGS
        if before[f] != getattr(instance, f)
    }
    password_changed = before["password"] != instance.password and not state["rehash"]
    if not (changes or password_changed):
        return
    if not (before["is_staff"] or before["is_superuser"] or _is_staff(instance)):
        return  # a customer: their own account, not the vendor's staff
    if changes:
        _record("UpdateStaffUser", {"userName": instance.email, "changes": changes})
    if password_changed:
        _record(
            "UpdateLoginProfile",
            {
                "userName": instance.email,
                "passwordChanged": True,
                "usablePassword": instance.has_usable_password(),
            },
        )


def user_deleted(sender, instance, **kwargs):
    if instance.is_staff or instance.is_superuser:
        _record("DeleteStaffUser", {"userName": instance.email})


def user_groups_changed(sender, instance, action, reverse, pk_set, **kwargs):
    """``user.groups`` or ``group.user_set`` changed."""
    if action == "pre_clear":
        related = instance.user_set.all() if reverse else instance.groups.all()
        instance.__dict__["_staff_audit_cleared"] = list(related)
        return
    if action not in ("post_add", "post_remove", "post_clear"):
        return
    event = "AddUserToGroup" if action == "post_add" else "RemoveUserFromGroup"
    if action == "post_clear":
        related = instance.__dict__.pop("_staff_audit_cleared", [])
    elif pk_set:
        model = get_user_model() if reverse else Group
        related = list(model.objects.filter(pk__in=pk_set))
    else:
        return  # nothing was actually added or removed
    if not related:
        return
    if reverse:  # one group, these users
        for user in sorted(related, key=lambda u: u.email):
            _record(event, {"userName": user.email, "groupNames": [instance.name]})
    else:
        _record(event, {"userName": instance.email, "groupNames": sorted(g.name for g in related)})


def user_permissions_changed(sender, instance, action, reverse, pk_set, **kwargs):
    """``user.user_permissions`` or ``permission.user_set`` changed."""
    _permissions_changed(
        instance,
        action,
        reverse,
        pk_set,
        owner_model=get_user_model(),
        owner_set="user_set",
        own_set="user_permissions",
        events=("AttachUserPolicy", "DetachUserPolicy"),
        owner_parameters=lambda user: {"userName": user.email},
    )


def group_permissions_changed(sender, instance, action, reverse, pk_set, **kwargs):
    """``group.permissions`` or ``permission.group_set`` changed."""
    _permissions_changed(
        instance,
        action,
        reverse,
        pk_set,
        owner_model=Group,
        owner_set="group_set",
        own_set="permissions",
        events=("AttachGroupPolicy", "DetachGroupPolicy"),
        owner_parameters=lambda group: {"groupName": group.name},
    )


def _permissions_changed(
    instance, action, reverse, pk_set, *, owner_model, owner_set, own_set, events, owner_parameters
):
    if action == "pre_clear":
        related = getattr(instance, owner_set if reverse else own_set).all()
        if not reverse:
            related = related.select_related("content_type")
        instance.__dict__["_staff_audit_cleared"] = list(related)
        return
    if action not in ("post_add", "post_remove", "post_clear"):
        return
    event = events[0] if action == "post_add" else events[1]
    if action == "post_clear":
        related = instance.__dict__.pop("_staff_audit_cleared", [])
    elif pk_set:
        if reverse:
            related = list(owner_model.objects.filter(pk__in=pk_set))
        else:
            related = list(Permission.objects.filter(pk__in=pk_set).select_related("content_type"))
    else:
        return
    if not related:
        return
    if reverse:  # one permission, these owners
        code = _codes([instance])
        for owner in related:
            _record(event, {**owner_parameters(owner), "permissions": code})
    else:
        _record(event, {**owner_parameters(instance), "permissions": _codes(related)})


# --- Groups -------------------------------------------------------------------------------


def group_before_save(sender, instance, raw=False, **kwargs):
    if raw or instance._state.adding or instance.pk is None:
        instance.__dict__.pop(_STATE, None)
        return
    old_name = sender._base_manager.filter(pk=instance.pk).values_list("name", flat=True).first()
    instance.__dict__[_STATE] = {"name": old_name}


def group_saved(sender, instance, created=False, raw=False, **kwargs):
    state = instance.__dict__.pop(_STATE, None)
    if raw:
        return
    if created:
        _record("CreateGroup", {"groupName": instance.name})
    elif state is not None and state["name"] not in (None, instance.name):
        _record("UpdateGroup", {"groupName": state["name"], "newGroupName": instance.name})


def group_before_delete(sender, instance, **kwargs):
    instance.__dict__["_staff_audit_members"] = sorted(
        instance.user_set.values_list("email", flat=True)
    )


def group_deleted(sender, instance, **kwargs):
    members = instance.__dict__.pop("_staff_audit_members", [])
    _record("DeleteGroup", {"groupName": instance.name, "memberUserNames": members})


# --- Authenticators -----------------------------------------------------------------------


def device_before_save(sender, instance, raw=False, update_fields=None, **kwargs):
    if raw or instance._state.adding or instance.pk is None:
        instance.__dict__.pop(_STATE, None)
        return
    if update_fields is not None and "confirmed" not in update_fields:
        instance.__dict__.pop(_STATE, None)
        return
    confirmed = (
        sender._base_manager.filter(pk=instance.pk).values_list("confirmed", flat=True).first()
    )
    instance.__dict__[_STATE] = {"confirmed": confirmed}


def device_saved(sender, instance, created=False, raw=False, **kwargs):
    state = instance.__dict__.pop(_STATE, None)
    if raw:
        return
    if created:
        if not instance.confirmed:
            return  # the set-up page's pending device: usable only once confirmed (audited)
        event = "CreateVirtualMFADevice"
    elif state is not None and state["confirmed"] is not None:
        if state["confirmed"] == instance.confirmed:
            return
        event = "EnableMFADevice" if instance.confirmed else "DeactivateMFADevice"
    else:
        return
    if _is_staff(instance.user):
        _record(event, _device_parameters(instance))


def device_deleted(sender, instance, **kwargs):
    if not instance.confirmed:
        return  # a pending set-up that was never usable
    user = get_user_model()._base_manager.filter(pk=instance.user_id).first()
    if user is not None and _is_staff(user):
        _record("DeleteVirtualMFADevice", _device_parameters(instance, user=user))


def _device_parameters(device: TOTPDevice, user=None) -> dict:
    user = user or device.user
    return {"userName": user.email, "deviceName": device.name, "confirmed": device.confirmed}


# --- Wiring (SecurityConfig.ready) ----------------------------------------------------------


def _sync_staff_groups_unaudited(**kwargs) -> None:
    from orgs.staff_roles import sync_staff_groups_after_migrate

    with not_audited():
        sync_staff_groups_after_migrate(**kwargs)


def connect() -> None:
    # orgs connects the groups' sync to post_migrate; it runs here inside not_audited().
    post_migrate.disconnect(dispatch_uid="sync_staff_groups")
    post_migrate.connect(_sync_staff_groups_unaudited, dispatch_uid="sync_staff_groups")
    User = get_user_model()
    hooks = [
        (pre_save, user_before_save, User),
        (post_save, user_saved, User),
        (post_delete, user_deleted, User),
        (m2m_changed, user_groups_changed, User.groups.through),
        (m2m_changed, user_permissions_changed, User.user_permissions.through),
        (m2m_changed, group_permissions_changed, Group.permissions.through),
        (pre_save, group_before_save, Group),
        (post_save, group_saved, Group),
        (pre_delete, group_before_delete, Group),
        (post_delete, group_deleted, Group),
        (pre_save, device_before_save, TOTPDevice),
        (post_save, device_saved, TOTPDevice),
        (post_delete, device_deleted, TOTPDevice),
    ]
    for signal, receiver, sender in hooks:
        signal.connect(receiver, sender=sender, dispatch_uid=f"staff_audit.{receiver.__name__}")
