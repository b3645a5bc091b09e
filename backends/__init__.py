"""Adapters from each image API to jobs.backend.Backend, and the checks on what they return."""
