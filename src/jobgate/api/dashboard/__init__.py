"""The web dashboard at ``/``: static pages that call the native API, and their sessions."""
