"""The training run's pictures: a balanced grid, and titles that say what they show."""
import numpy as np
import pytest

from gpucnn import plots


@pytest.mark.parametrize("n, shape", [(1, (1, 1)), (5, (1, 5)), (16, (2, 8)), (17, (3, 6)), (33, (5, 7)), (65, (11, 6))])
def test_grid_leaves_no_picture_alone_on_its_last_row(n, shape):
    rows, cols = plots.grid_shape(n)
    assert (rows, cols) == shape and rows * cols >= n
    last = n - (rows - 1) * cols
    assert n == 1 or last >= cols / 2


def test_feature_maps_title_the_input_with_its_true_label(monkeypatch):
    drawn = {}
    monkeypatch.setattr(plots, "_grid", lambda images, titles, *rest, **kw: drawn.update(titles=titles))
    plots.feature_maps(np.zeros((1, 4, 4)), np.zeros((3, 4, 4)), "7", "unused.png")
    assert drawn["titles"] == ["input, label 7", "map 0", "map 1", "map 2"]
