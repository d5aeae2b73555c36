"""Policies: the model, the text language, OCI/Docker profile import and export."""
