from cape_bench.data.layout import DatasetRoot
from cape_bench.data.verify import verify_dataset


def test_demo_data_passes_verify(demo_root):
    report = verify_dataset(DatasetRoot(demo_root, is_demo=True))
    assert report.ok, report.render()
    assert sum(1 for status, _ in report.lines if status == "ok") == 15


def test_mp100_install_is_checked_against_the_published_splits(quirky_root):
    report = verify_dataset(DatasetRoot(quirky_root), check_images=False)
    assert not report.ok
    text = report.render()
    # Split 1's published test set has horse_body (2) and Woodpecker (14) but not face (18) ...
    assert "mp100_split1_test.json: categories differ from the published split" in text
    assert "unexpected [18 (face)" in text
    # ... and the same categories in train, val and test of one split is reported too.
    assert "split 1: train and val share categories" in text
    assert "filtered by the protocol" in text
