import pytest
import numpy as np
from PIL import Image

import train


@pytest.mark.slow
def test_profile_flag_writes_a_profiler_trace(tmp_path):
    for c, name in enumerate(["a", "b"]):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(np.full((16, 16, 3), 100 * c + i, np.uint8)).save(tmp_path / "data" / name / f"{i}.png")
    run = tmp_path / "run"
    assert train.main([str(tmp_path / "data"), "--backbone", "tiny_image", "--epochs", "1", "--profile",
                       "--output", str(run)]) == 0
    traces = list((run / "logs" / "plugins" / "profile").rglob("*.xplane.pb"))
    assert traces and traces[0].stat().st_size > 0
