"""``core.html``: the fast formatting of the audit list and chart escapes exactly as Django's
``conditional_escape`` does, so hostile values from an imported trail cannot inject markup."""

import pytest
from django.utils.html import conditional_escape
from django.utils.safestring import SafeString

from core.html import html_format, html_join

HOSTILE = [
    "<script>alert(1)</script>",
    '" onmouseover="alert(1)',
    "' autofocus onfocus='x",
    "&amp; already &lt;escaped&gt;",
    "arn:aws:iam::111122223333:role/R",
    "ünïcødé ✓",
    42,
    3.25,
    None,
]


@pytest.mark.parametrize("value", HOSTILE)
def test_values_are_escaped_as_django_escapes_them(value):
    assert html_format('<td title="{v}">{v}</td>', v=value) == (
        f'<td title="{conditional_escape(value)}">{conditional_escape(value)}</td>'
    )


def test_safe_fragments_are_taken_as_they_are_and_the_join_is_safe():
    fragment = SafeString("<br>")
    joined = html_join("\n", [html_format("{a}{b}", a=fragment, b="<i>")] * 2)
    assert isinstance(joined, SafeString)
    assert joined == "<br>&lt;i&gt;\n<br>&lt;i&gt;"
