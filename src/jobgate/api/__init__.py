"""HTTP front ends: translators from wire formats onto the service layer."""
