"""What the service tells operators about itself: Prometheus metrics and optional traces.

A leaf package: it imports nothing of jobgate, so every layer (store, staging, dispatcher,
service, api) may record into it.
"""
