"""HTTP layer: one blueprint per audience, thin handlers over the domain modules."""
