"""Hessian-vector products, negative-curvature searches and NC step rules (torch only)."""
