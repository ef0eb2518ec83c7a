"""The hourly event counts and the filtered chart's rollup on PostgreSQL (the upserts, UTC
hours, retention's subtraction, the chart = COUNT(*) for every filter and range edge):
the same tests as the unit lane's, against the production database."""

from tests.audit.test_chart_counts import (  # noqa: F401 — the filtered chart, on PostgreSQL
    org,
    test_another_orgs_events_are_never_in_this_ones_chart,
    test_retention_subtracts_what_it_purges_from_the_rollup,
    test_the_chart_equals_a_count_of_the_events_for_every_filter_and_range,
    test_the_rollup_holds_one_row_per_hour_and_combination,
)
from tests.audit.test_counts import (  # noqa: F401 — collected here to run on PostgreSQL
    org_with_boundary_events,
    pytestmark,
    test_another_orgs_events_are_never_counted_in_this_one,
    test_counts_equal_a_count_of_the_events_at_hour_boundaries_and_across_time_zones,
    test_retention_subtracts_what_it_purges,
    test_the_unfiltered_chart_equals_the_filtered_path_over_the_same_range,
)
