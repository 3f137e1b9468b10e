"""A remote GA4GH TES server as a backend: jobs are created, followed and canceled there."""
