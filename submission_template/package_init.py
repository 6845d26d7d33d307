"""DCASE 2025 Task 1 inference package __SUBMISSION_LABEL__: one module per submission index
(``__SUBMISSION_LABEL___<index>``) with load_model, load_inputs, get_model_for_device and predict."""
