import numpy as np

from pipeline.selection import kept_at_thresholds, keep_mask


def test_keep_mask_thresholds_and_abstentions():
    consistency = np.array([1.0, 0.625, 5 / 8 + 1e-12, 0.5, 0.0])
    n_valid = np.array([8, 8, 8, 8, 0])
    assert keep_mask(consistency, n_valid, 1.0).tolist() == [True, False, False, False, False]
    assert keep_mask(consistency, n_valid, 0.625).tolist() == [True, True, True, False, False]
    assert keep_mask(consistency, n_valid, 0.0).tolist() == [True, True, True, True, False]


def test_kept_at_thresholds_counts():
    counts = kept_at_thresholds(np.array([1.0, 0.75, 0.5]), np.array([4, 4, 2]), (0.0, 0.75, 1.0))
    assert counts == {"0": 3, "0.75": 2, "1": 1}
