"""Quarry services: each subpackage is one independently deployable process."""
