"""What a training step eats: records -> samples (:mod:`.transforms`: pre-transforms,
augmentation, letterbox), samples -> targets (:mod:`.targets`: centre heatmaps, sizes, masks),
and batches (:mod:`.batches`: the dataset, the seeded batch order, the loader). The datasets
themselves (EMOTIC, HECO, folders, the synthetic scenes) are read by :mod:`training.datasets`."""
