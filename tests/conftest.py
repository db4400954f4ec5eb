import jax

# Parity tests compare float32 math against PyTorch: ask XLA for full-precision matmuls on every backend.
jax.config.update("jax_default_matmul_precision", "highest")
