"""Thin adapters for frameworks that need their own types. Each module imports its
framework lazily (only when you import that module); the core imports none."""
