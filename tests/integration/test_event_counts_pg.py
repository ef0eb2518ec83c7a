"""The hourly event counts on PostgreSQL (the upsert, UTC hours, retention's subtraction):
the same tests as the unit lane's, against the production database."""

from tests.audit.test_counts import (  # noqa: F401 — collected here to run on PostgreSQL
    org_with_boundary_events,
    pytestmark,
    test_another_orgs_events_are_never_counted_in_this_one,
    test_counts_equal_a_count_of_the_events_at_hour_boundaries_and_across_time_zones,
    test_retention_subtracts_what_it_purges,
    test_the_unfiltered_chart_equals_the_filtered_path_over_the_same_range,
)
