"""The vendor staff groups and their exact permissions.

Data migrations call ``sync_staff_groups`` whenever a model or permission is added, so a new
deployment and an upgraded one end with the same groups. Nothing here grants change or delete
on audited objects: state changes go through services, which audit them.
"""

ACCOUNT_REPS = "Account representatives"
SUPPORT_STAFF = "Support staff"

_LOOKUP = [
    "orgs.view_organization",
    "orgs.view_membership",
    "orgs.view_site",
    "orgs.view_appinstance",
    "connections.view_byokconnection",
    "connections.view_regionalkey",
    "setup.view_setuprequest",
    "setup.view_requestevent",
    "setup.view_preflightrun",
    "connections.view_datakey",
    "connections.view_scopedrevocation",
    "dataplane.view_appdatahealth",
    "reencryption.view_reencryptionrequest",
    "reencryption.view_reencryptionpreflight",
    "reencryption.view_reencryptionjob",
    "reencryption.view_reencryptionevent",
    "audit.view_auditevent",
    "audit.view_chaindigest",
    "audit.view_cloudtrailsource",
    "audit.view_ingestedfile",
    "audit.view_webhookendpoint",
    "audit.view_webhookdelivery",
]

STAFF_GROUP_PERMISSIONS: dict[str, list[str]] = {
    ACCOUNT_REPS: [
        *_LOOKUP,
        "setup.process_setuprequest",
        "reencryption.process_reencryptionrequest",
        "setup.run_preflight",
        "setup.add_requestevent",  # internal notes on a request
    ],
    SUPPORT_STAFF: [
        *_LOOKUP,
        "orgs.view_user",
        "connections.run_health_check",
        "setup.run_preflight",
        "connections.resend_notification",
        "api.view_apitoken",  # which tokens an org has, their scopes and use; never the hash
    ],
}


def sync_staff_groups(apps, schema_editor=None) -> None:
    """Create the groups and set their permissions to exactly the lists above.

    Permissions of models that do not exist yet at this point of the migration history are
    skipped: the migration that adds the model calls this again.
    """
    from django.contrib.auth.management import create_permissions

    for app_config in apps.get_app_configs():
        app_config.models_module = True  # let create_permissions run inside a migration
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None

    _apply(apps.get_model("auth", "Group"), apps.get_model("auth", "Permission"))


def sync_staff_groups_after_migrate(**kwargs) -> None:
    """post_migrate: keep the groups exact after any migrate or test-database flush."""
    from django.contrib.auth.models import Group, Permission

    _apply(Group, Permission)


def _apply(Group, Permission) -> None:
    for group_name, codes in STAFF_GROUP_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=group_name)
        perms = []
        for code in codes:
            app_label, codename = code.split(".")
            perm = Permission.objects.filter(
                content_type__app_label=app_label, codename=codename
            ).first()
            if perm is not None:
                perms.append(perm)
        group.permissions.set(perms)
