"""training.data.batches and training.objectives.benet: routing, determinism, dataset mixing,
DDP-exact losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from caer_ros.model.network import build_model
from training.config import TASKS, config_from_dict
from training.data.batches import (
    CaerDataset,
    DataError,
    config_split,
    epoch_batches,
    make_collate,
    read_rgb,
)
from training.data.targets import read_at_centers
from training.objectives.benet import compute_losses, local_counts, term_names
from training.objectives.losses import center_focal_loss, multilabel_focal_loss, size_l1_loss

TINY = {"backbone": "hrnet_w18_small", "input_size": [64, 64], "head_blocks": 0,
        "classifier_channels": 32}


def make_config(root, **changes):
    raw = {"model": dict(TINY), "data": {"root": str(root)}, "batch_size": 4, "workers": 0}
    for key, value in changes.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return config_from_dict(raw)


def test_items_follow_their_pre_transform(synthetic_dataset):
    config = make_config(synthetic_dataset)
    records, _ = config_split(config, "train")
    dataset = CaerDataset(records, config, train=True)
    seen = {}
    for epoch in range(6):
        for index in range(len(dataset)):
            item = dataset[(epoch, index)]
            seen.setdefault(item.pre_transform, item)
            assert item.image.shape == (3, 64, 64) and item.image.dtype == np.float32
            assert item.labels.shape == (len(item.boxes), 26)
            routes = {t for t, on in zip(TASKS, item.routes, strict=True) if on}
            assert routes == set(config.routes[item.pre_transform])
            if item.pre_transform == "extract_subject":
                assert len(item.boxes) <= 1  # one subject (unless the warp pushed it out)
            # boxes stay inside the network input
            assert (item.boxes >= 0).all() and (item.boxes[:, 2::2] <= 64).all()
    assert set(seen) == {"raw", "random_mask", "extract_subject", "mask_all"}


def test_same_key_same_item_and_epochs_differ(synthetic_dataset):
    config = make_config(synthetic_dataset)
    records, _ = config_split(config, "train")
    one = CaerDataset(records, config, train=True)
    two = CaerDataset(records, config, train=True)
    a, b = one[(3, 2)], two[(3, 2)]
    assert a.pre_transform == b.pre_transform
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    assert any(not np.array_equal(one[(e, 2)].image, a.image) for e in range(4, 8))
    # validation: fixed draw, whatever the epoch
    val = CaerDataset(records, config, train=False)
    np.testing.assert_array_equal(val[(0, 1)].image, val[(9, 1)].image)


def test_mixed_sets_keep_their_own_labels(synthetic_dataset):
    config = make_config(synthetic_dataset, model={"categories": ["emotic", "heco"]},
                         data={"train": ["emotic", "heco"]})
    records, reports = config_split(config, "train")
    sets = {r.category_set for r in records}
    assert sets == {"emotic", "heco"} and len(reports) == 2
    dataset = CaerDataset(records, config, train=True)
    widths = {dataset.records[i].category_set: dataset[(0, i)].labels.shape[1]
              for i in range(len(dataset))}
    assert widths == {"emotic": 26, "heco": 8}
    heco = [dataset[(0, i)] for i in range(len(dataset)) if records[i].category_set == "heco"]
    # HECO has one category per person: one-hot rows, never EMOTIC's
    assert all((item.labels.sum(axis=1) == 1).all() for item in heco if len(item.labels))


def test_epoch_batches_shard_exactly():
    one = epoch_batches(10, 4, seed=1, epoch=2)
    assert len(one) == 2 and all(len(b) == 4 for b in one)  # incomplete last batch dropped
    shards = [epoch_batches(10, 4, seed=1, epoch=2, rank=r, world=2) for r in range(2)]
    for b, (left, right) in enumerate(zip(*shards, strict=True)):
        assert left + right == one[b]
    assert epoch_batches(10, 4, 1, 3) != one  # reshuffled each epoch
    everything = epoch_batches(10, 4, 1, 0, shuffle=False, drop_last=False)
    assert [i for b in everything for _, i in b] == list(range(10))
    assert epoch_batches(3, 8, 0, 0) and len(epoch_batches(3, 8, 0, 0)[0]) == 3


def test_missing_data_is_named(tmp_path, synthetic_dataset):
    with pytest.raises(DataError, match="--data"):
        config_split(config_from_dict({}), "train")
    with pytest.raises(Exception, match="Annotations"):
        config_split(make_config(tmp_path), "train")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="broken.jpg"):
        read_rgb(broken)


def _batch(config, root, keys):
    records, _ = config_split(config, "train")
    dataset = CaerDataset(records, config, train=True)
    return make_collate(dataset.input_size)([dataset[k] for k in keys])


def test_losses_use_only_routed_samples(synthetic_dataset):
    """compute_losses equals the paper's terms computed by hand on the routed subsets."""
    config = make_config(synthetic_dataset, pre_transforms={"raw": 1, "random_mask": 1,
                                                            "extract_subject": 0,
                                                            "mask_all": 1})
    batch = _batch(config, synthetic_dataset, [(0, i) for i in range(8)])
    routed = {t: batch.route(t).numpy() for t in TASKS}
    assert routed["det"].any() and routed["bu"].any() and routed["bg"].any()
    model = build_model(config.model, seed=0).eval()
    with torch.no_grad():
        out = model(batch.images)
    names = term_names(config, half=True)
    counts = local_counts(batch, names)
    _, terms = compute_losses(out, batch, config, counts, counts)
    # det at 1/4: eq. 1 + 0.1 eq. 2 on the det samples only
    det = np.flatnonzero(routed["det"])
    t = batch.targets[0]
    expected = center_focal_loss(out.quarter.heatmap[det], t.heatmap[det]) + 0.1 * size_l1_loss(
        out.quarter.size[det], t.sizes[det], t.indices[det], t.mask[det])
    torch.testing.assert_close(terms["det.q"], expected)
    # bu at 1/2: eq. 5 at the centres of the people of bu samples
    logits = read_at_centers(out.half.emotions["emotic"], batch.targets[1])
    person_sample = batch.person_samples()
    keep = routed["bu"][person_sample]
    labels = np.concatenate([batch.labels[i] for i in np.flatnonzero(routed["bu"])])
    torch.testing.assert_close(terms["bu.h.emotic"], multilabel_focal_loss(
        logits[torch.from_numpy(keep)], torch.from_numpy(labels)))
    # bg: the max over the image's people
    bg = np.flatnonzero(routed["bg"])
    head = np.stack([batch.labels[i].max(axis=0) for i in bg])
    torch.testing.assert_close(terms["bg.emotic"], multilabel_focal_loss(
        out.background["emotic"][bg], torch.from_numpy(head)))
    # no extract_subject sample: the pc term is an exact, graph-connected zero
    assert not routed["pc"].any() and float(terms["pc.emotic"]) == 0.0


def test_split_batches_add_up_to_the_whole(synthetic_dataset):
    """The DDP normalisation: two halves, each normalised by the global counts, sum to the
    loss of the whole batch (the 1-process loss), term by term, and so do their gradients."""
    config = make_config(synthetic_dataset, batch_size=8)
    keys = [(1, i) for i in range(8)]
    whole = _batch(config, synthetic_dataset, keys)
    halves = [_batch(config, synthetic_dataset, keys[:4]),
              _batch(config, synthetic_dataset, keys[4:])]
    names = term_names(config, half=True)
    model = build_model(config.model, seed=0).eval()  # eval: BN does not mix the samples
    counts = local_counts(whole, names)
    total, terms = compute_losses(model(whole.images), whole, config, counts, counts)
    total.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    parts = [local_counts(h, names) for h in halves]
    totals = {k: parts[0][k] + parts[1][k] for k in parts[0]}
    assert totals == counts
    summed = {}
    for half, part in zip(halves, parts, strict=True):
        loss, half_terms = compute_losses(model(half.images), half, config, part, totals,
                                          world=2)
        (loss / 2).backward()  # DDP averages the two processes' gradients
        for k, v in half_terms.items():
            summed[k] = summed.get(k, 0.0) + v
    for k in terms:
        torch.testing.assert_close(summed[k], terms[k], rtol=1e-5, atol=1e-6)
    for n, p in model.named_parameters():
        if n in grads:
            scale = float(grads[n].abs().max()) + 1e-8  # float summation order differs
            torch.testing.assert_close(p.grad, grads[n], rtol=1e-3, atol=1e-4 * scale)


def test_heco_as_extra_data_uses_all_of_it(synthetic_dataset):
    config = make_config(synthetic_dataset, model={"categories": ["emotic", "heco"]},
                         data={"train": ["emotic", "heco"], "val": ["emotic", "heco"],
                               "heco_split": "all"})
    train, _ = config_split(config, "train")
    val, _ = config_split(config, "val")
    assert sum(r.category_set == "heco" for r in train) == 12  # every HECO image
    assert not any(r.category_set == "heco" for r in val)


def test_continuous_term_reads_the_centres(synthetic_dataset):
    """With a continuous head, cont.q is 1 - CCC of sigmoid(maps) at the bu people's centres
    against (value - 1) / 9; l2 is the mean squared error summed over the 3 dimensions."""
    from training.objectives.multitask import ccc_loss

    for loss in ("ccc", "l2"):
        config = make_config(synthetic_dataset, model={**TINY, "continuous": True},
                             pre_transforms={"raw": 0, "random_mask": 1, "extract_subject": 0,
                                             "mask_all": 0}, continuous_loss=loss)
        batch = _batch(config, synthetic_dataset, [(0, i) for i in range(8)])
        model = build_model(config.model, seed=0).eval()
        with torch.no_grad():
            out = model(batch.images)
        names = term_names(config, half=True)
        assert ("cont.q", "bu") in names
        counts = local_counts(batch, names)
        assert counts["cont.q"] == sum(len(b) for b in batch.boxes)  # every person annotated
        _, terms = compute_losses(out, batch, config, counts, counts)
        predicted = torch.sigmoid(read_at_centers(out.quarter.continuous, batch.targets[0]))
        target = torch.from_numpy((np.concatenate(batch.continuous) - 1) / 9)
        expected = ccc_loss(predicted, target) if loss == "ccc" \
            else ((predicted - target) ** 2).sum(dim=1).mean()
        torch.testing.assert_close(terms["cont.q"], expected.float())
