"""Techniques: one module per inference-time technique (see ``itas.techniques.base``)."""
