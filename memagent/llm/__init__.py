"""Language models: one interface (base.py) for every stage that needs a model."""
