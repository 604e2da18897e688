"""Module services: one package per module (model.py, train.py, evaluate.py, service.py, cli.py)."""
