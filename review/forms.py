"""Forms of the review workflow shared by both request kinds."""

from django import forms


class RejectRequestForm(forms.Form):
    reason = forms.CharField(
        label="Reason (the customer sees it)",
        widget=forms.Textarea(attrs={"rows": 3}),
        max_length=2000,
    )


class InternalNoteForm(forms.Form):
    note = forms.CharField(
        label="Internal note (vendor staff only)",
        widget=forms.Textarea(attrs={"rows": 3}),
        max_length=4000,
    )
