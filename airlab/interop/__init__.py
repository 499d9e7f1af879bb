"""Cross-backend tools: weight conversion between PyTorch and TensorFlow (`convert`).

Nothing here imports a framework: weights travel as numpy arrays, and the target model is
built through its backend (which imports its own framework) when a run is converted.
"""
