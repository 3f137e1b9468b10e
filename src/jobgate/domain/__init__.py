"""The domain: jobs, their states and events. Imports nothing else of the project."""
