"""Offline training: datasets, data (transforms, targets, batches), objectives, the one
training loop (``loop``) and its two jobs (``train``: BENet / KA / ABAW, ``train_teacher``),
evaluation and teachers; ARCHITECTURE.md maps them."""
