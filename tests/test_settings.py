"""Settings: generated secrets are made once, whole, even when processes start together."""

from __future__ import annotations

import stat
from concurrent.futures import ThreadPoolExecutor

from core.settings import persisted_secret


def test_a_secret_made_by_many_at_once_is_one_complete_value(tmp_path):
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: persisted_secret(tmp_path, "api_token"), range(32)))
    values = {value for value, _ in results}
    assert len(values) == 1 and len(values.pop()) >= 32
    assert sum(made_now for _, made_now in results) == 1
    assert stat.S_IMODE((tmp_path / "api_token").stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["api_token"]  # no temporary files left
    assert persisted_secret(tmp_path, "api_token") == (results[0][0], False)
