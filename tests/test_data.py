"""vnca.data on the real files, on broken copies of them, and on downloads from a local server."""

import dataclasses
import gzip
import hashlib
import http.server
import threading
import urllib.request

import jax
import numpy as np
import pytest

from vnca import data as D
from vnca import labels as labels_module

TEST = D.BINARIZED_MNIST["test"]


@pytest.fixture(scope="module")
def test_file(data_dir) -> bytes:
    """The verified bytes of the binarized test split."""
    return D.fetch(TEST)


# ---------------------------------------------------------------- the real data


def test_dataset_has_the_papers_splits_and_shapes():
    ds = D.load_binarized_mnist()
    assert ds.train.shape == (60_000, 32, 32) and ds.test.shape == (10_000, 32, 32)
    assert ds.train.dtype == np.uint8 and ds.test.dtype == np.uint8
    for split in (ds.train, ds.test):
        assert set(np.unique(split)) == {0, 1}
        border = np.ones((32, 32), bool)
        border[2:30, 2:30] = False
        assert split[:, border].sum() == 0  # the padding is empty
        assert 0.08 < split.mean() < 0.12  # about one pixel in ten is on


def test_training_set_is_train_then_valid():
    ds = D.load_binarized_mnist()
    train, valid = D.load_split("train"), D.load_split("valid")
    np.testing.assert_array_equal(ds.train[:50_000, 2:30, 2:30], train)
    np.testing.assert_array_equal(ds.train[50_000:, 2:30, 2:30], valid)


def test_parsed_cache_is_used_and_rebuilt_when_unreadable(tmp_path, monkeypatch, test_file):
    first = D.load_split("test", cache=tmp_path)
    (packed,) = (tmp_path / "parsed").iterdir()
    assert packed.stat().st_size < 1_100_000  # 10,000 images at a bit a pixel

    def no_fetch(*args, **kwargs):
        raise AssertionError("the packed cache should have been used")

    monkeypatch.setattr(D, "fetch", no_fetch)
    np.testing.assert_array_equal(D.load_split("test", cache=tmp_path), first)

    packed.write_bytes(b"not an npz file")
    monkeypatch.undo()
    np.testing.assert_array_equal(D.load_split("test", cache=tmp_path), first)


def test_unknown_split_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown split 'validation'"):
        D.load_split("validation")


# ---------------------------------------------------------------- local copies, good and bad


@pytest.mark.parametrize("layout", ["root", "subfolder", "gzipped"])
def test_local_copies_are_found_and_verified(tmp_path, test_file, layout):
    if layout == "root":
        (tmp_path / TEST.name).write_bytes(test_file)
    elif layout == "subfolder":
        (tmp_path / "binarized_mnist").mkdir()
        (tmp_path / "binarized_mnist" / TEST.name).write_bytes(test_file)
    else:
        (tmp_path / f"{TEST.name}.gz").write_bytes(gzip.compress(test_file, compresslevel=1))
    assert D.fetch(TEST, data_dir=tmp_path) == test_file


def _broken(test_file: bytes, how: str) -> bytes:
    if how == "corrupted":
        flipped = bytearray(test_file)
        flipped[1_000_000] ^= 1  # "0" <-> "1": one pixel of one image
        return bytes(flipped)
    if how == "truncated":
        return test_file[:-1_568]
    if how == "longer":
        return test_file + test_file[:1_568]
    raise ValueError(how)


@pytest.mark.parametrize("how, message", [
    ("corrupted", r"SHA-256 is [0-9a-f]{64}, expected e6687bfe.*corrupted or another file"),
    ("truncated", r"expected 15,680,000 bytes .* found 15,678,432 \(the file is truncated\)"),
    ("longer", r"found 15,681,568 \(the file is longer than the original\)"),
])
def test_bad_copies_are_refused_with_the_reason(tmp_path, test_file, how, message):
    path = tmp_path / TEST.name
    path.write_bytes(_broken(test_file, how))
    with pytest.raises(D.DataError, match=message) as err:
        D.fetch(TEST, data_dir=tmp_path)
    assert str(path) in str(err.value)


def test_another_file_of_the_same_size_is_refused(tmp_path):
    valid = D.fetch(D.BINARIZED_MNIST["valid"])  # same size as the test file, other content
    (tmp_path / TEST.name).write_bytes(valid)
    with pytest.raises(D.DataError, match="right size, wrong content"):
        D.fetch(TEST, data_dir=tmp_path)


def test_truncated_gzip_is_refused(tmp_path, test_file):
    packed = gzip.compress(test_file, compresslevel=1)
    (tmp_path / f"{TEST.name}.gz").write_bytes(packed[: len(packed) // 2])
    with pytest.raises(D.DataError, match=r"binarized_mnist_test\.amat\.gz: not a complete gzip file"):
        D.fetch(TEST, data_dir=tmp_path)


def test_missing_folder_and_missing_file(tmp_path, monkeypatch):
    with pytest.raises(D.DataError, match="the data_dir argument names .*nowhere.*not an existing folder"):
        D.fetch(TEST, data_dir=tmp_path / "nowhere")
    monkeypatch.setenv("VNCA_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(D.DataError, match="VNCA_DATA_DIR names"):
        D.fetch(TEST)
    with pytest.raises(D.DataError, match=r"binarized_mnist_test\.amat is not in the data folder"):
        D.fetch(TEST, data_dir=tmp_path)


# ---------------------------------------------------------------- parsing


def _amat(images: np.ndarray) -> bytes:
    return b"".join(b" ".join(b"%d" % v for v in img.reshape(-1)) + b"\n" for img in images)


def test_parse_round_trip():
    images = np.random.default_rng(0).integers(0, 2, (5, 28, 28), dtype=np.uint8)
    np.testing.assert_array_equal(D.parse_amat(_amat(images)), images)


def test_parse_agrees_with_a_plain_parser(test_file):
    head = test_file[: 20 * D.LINE]
    slow = np.array([[int(v) for v in line.split()] for line in head.decode().splitlines()])
    np.testing.assert_array_equal(D.parse_amat(head).reshape(20, -1), slow)


@pytest.mark.parametrize("edit, message", [
    (lambda b: b[:1_568] + b[1_570:], "f: line 2 has 1,565 characters, expected 1,567"),
    (lambda b: b[:4] + b"2" + b[5:], "f: line 1, value 3 is '2'; expected 0 or 1"),
    (lambda b: b[:1] + b"\t" + b[2:], r"f: line 1, after value 1: found '\\t'"),
    (lambda b: b[:-1], "f: the file is empty or its last line is incomplete"),
    (lambda b: b"", "f: the file is empty"),
    (lambda b: b.replace(b"\n", b"\r\n"), "f: line 1 has 1,568 characters"),  # Windows line ends
    (lambda b: b[:1_567] + b"\r" + b[1_568:], r"f: line 1, after value 784: found '\\r'"),
])
def test_parse_errors_say_where(edit, message):
    good = _amat(np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(D.DataError, match=message):
        D.parse_amat(edit(good), where="f")


# ---------------------------------------------------------------- downloads


class _Server:
    """A small HTTP server on 127.0.0.1 with a good, a truncated and a wrong copy of a file."""

    def __init__(self, content: bytes):
        self.requests = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append(self.path)
                if self.path == "/good":
                    body, length = content, len(content)
                elif self.path == "/truncated":  # promises the whole file, sends half, hangs up
                    body, length = content[: len(content) // 2], len(content)
                elif self.path == "/wrong":
                    body, length = bytes(reversed(content)), len(content)
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(length))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def tiny():
    """A small .amat file, its spec, and a local server for it."""
    content = _amat(np.random.default_rng(1).integers(0, 2, (300, 28, 28), dtype=np.uint8))
    spec = D.RemoteFile("tiny.amat", "binarized_mnist", (), len(content),
                        hashlib.sha256(content).hexdigest())
    server = _Server(content)
    yield content, spec, server
    server.close()


@pytest.fixture
def no_data_dir(monkeypatch):
    monkeypatch.delenv("VNCA_DATA_DIR", raising=False)


def _files(folder):
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


def test_download_verifies_and_caches(tmp_path, tiny, no_data_dir):
    content, spec, server = tiny
    spec = dataclasses.replace(spec, urls=(f"{server.url}/good",))
    assert D.fetch(spec, cache=tmp_path) == content
    assert _files(tmp_path) == ["tiny.amat"]
    assert D.fetch(spec, cache=tmp_path) == content
    assert server.requests == ["/good"]  # the second call read the cache


@pytest.mark.parametrize("path, reason", [
    ("/truncated", "the file is truncated"), ("/wrong", "SHA-256"), ("/missing", "404"),
])
def test_failed_download_leaves_nothing_behind(tmp_path, tiny, no_data_dir, path, reason):
    content, spec, server = tiny
    spec = dataclasses.replace(spec, urls=(f"{server.url}{path}",))
    with pytest.raises(D.DataError, match=f"could not download tiny.amat") as err:
        D.fetch(spec, cache=tmp_path)
    assert reason in str(err.value) and f"{server.url}{path}" in str(err.value)
    assert "VNCA_DATA_DIR" in str(err.value)
    assert _files(tmp_path) == []  # no file, no partial file


def test_mirrors_are_tried_in_order(tmp_path, tiny, no_data_dir):
    content, spec, server = tiny
    spec = dataclasses.replace(spec, urls=tuple(f"{server.url}{p}" for p in ("/missing", "/truncated", "/good")))
    assert D.fetch(spec, cache=tmp_path, ) == content
    assert server.requests == ["/missing", "/truncated", "/good"]
    assert _files(tmp_path) == ["tiny.amat"]


def test_interrupted_download_leaves_nothing_behind(tmp_path, tiny, no_data_dir, monkeypatch):
    content, spec, server = tiny
    spec = dataclasses.replace(spec, urls=(f"{server.url}/good",))

    class Interrupted:
        def __init__(self, *args, **kwargs):
            self.calls = 0

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self, n):
            self.calls += 1
            if self.calls > 1:
                raise KeyboardInterrupt  # the user pressed Ctrl-C, or the notebook was stopped
            return content[:n // 4]

    monkeypatch.setattr(urllib.request, "urlopen", Interrupted)
    with pytest.raises(KeyboardInterrupt):
        D.fetch(spec, cache=tmp_path)
    assert _files(tmp_path) == []
    monkeypatch.undo()
    monkeypatch.delenv("VNCA_DATA_DIR", raising=False)
    assert D.fetch(spec, cache=tmp_path) == content


def test_corrupted_cache_file_is_downloaded_again(tmp_path, tiny, no_data_dir):
    content, spec, server = tiny
    spec = dataclasses.replace(spec, urls=(f"{server.url}/good",))
    cached = tmp_path / "binarized_mnist" / "tiny.amat"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(content[:100])
    with pytest.warns(UserWarning, match="truncated.*downloading it again"):
        assert D.fetch(spec, cache=tmp_path) == content
    assert cached.read_bytes() == content


# ---------------------------------------------------------------- batches


def test_batches_cover_an_epoch_without_repeats():
    n, batch = 1_000, 64
    key = jax.random.key(3)
    per_epoch = n // batch
    epoch0 = np.concatenate([D.batch_indices(key, s, n, batch) for s in range(per_epoch)])
    epoch1 = np.concatenate([D.batch_indices(key, s, n, batch) for s in range(per_epoch, 2 * per_epoch)])
    for epoch in (epoch0, epoch1):
        assert len(epoch) == per_epoch * batch == len(np.unique(epoch))
    assert not np.array_equal(epoch0, epoch1)  # each epoch has its own order
    np.testing.assert_array_equal(epoch0, np.concatenate(
        [D.batch_indices(jax.random.key(3), s, n, batch) for s in range(per_epoch)]))  # same key, same order
    assert not np.array_equal(epoch0[:batch], D.batch_indices(jax.random.key(4), 0, n, batch))


def test_the_training_batches_cover_each_epoch_once_in_a_new_order():
    """`batches`, the iterator `fit` uses: every image once per epoch, as float32 copies of it."""
    n, batch = 100, 16  # 6 batches per epoch; the 4 images left over wait for a later epoch
    images = np.zeros((n, 2, 2), np.uint8)
    images[:, 0, 0], images[:, 1, 1] = np.arange(n) % 2, np.arange(n) // 2  # the index, in two pixels
    stream = D.batches(images, batch, jax.random.key(5))
    epochs = [[next(stream) for _ in range(6)] for _ in range(3)]
    seen = []
    for epoch in epochs:
        batch_images = np.concatenate(epoch)
        assert batch_images.dtype == np.float32 and batch_images.shape == (96, 2, 2)
        index = (batch_images[:, 0, 0] + 2 * batch_images[:, 1, 1]).astype(int)
        np.testing.assert_array_equal(batch_images, images[index])  # the images themselves
        assert len(np.unique(index)) == 96  # no repeats within an epoch
        seen.append(index)
    assert not np.array_equal(seen[0], seen[1]) and not np.array_equal(seen[1], seen[2])
    assert len(np.unique(np.concatenate(seen))) > 96  # the left-over images come in later epochs


def test_batches_resume_exactly_where_they_stopped():
    images = np.arange(100 * 4, dtype=np.uint8).reshape(100, 2, 2)
    key = jax.random.key(0)
    straight = D.batches(images, 16, key)
    first = [next(straight) for _ in range(15)]  # crosses two epoch boundaries (6 batches per epoch)
    resumed = D.batches(images, 16, key, start=9)
    for expected in first[9:]:
        np.testing.assert_array_equal(next(resumed), expected)
    assert first[0].dtype == np.float32 and first[0].shape == (16, 2, 2)


@pytest.mark.parametrize("batch, start", [(0, 0), (101, 0), (10, -1)])
def test_bad_batch_arguments_are_refused_at_once(batch, start):
    with pytest.raises(ValueError):
        D.batches(np.zeros((100, 2, 2), np.uint8), batch, jax.random.key(0), start=start)


# ---------------------------------------------------------------- labels


def test_matching_recovers_a_known_shuffle():
    grey, digits = labels_module.load_mnist("test")
    grey, digits = grey[:500], digits[:500]
    p = grey / 255.0
    binarized = np.asarray(jax.random.bernoulli(jax.random.key(0), p)).astype(np.uint8)
    order = np.random.default_rng(0).permutation(500)
    labels = labels_module.match_to_mnist(binarized[order], grey, digits, chunk=128)
    np.testing.assert_array_equal(labels.mnist_index, order)
    np.testing.assert_array_equal(labels.digit, digits[order])
    assert (labels.margin >= 0).all() and (labels.digit_margin >= labels.margin - 1e-3).all()


def test_labels_of_the_test_split(monkeypatch):
    labels = labels_module.recover_labels("test", progress=False)
    _, mnist_digits = labels_module.load_mnist("test")
    assert labels.digit.shape == (10_000,)
    np.testing.assert_array_equal(np.bincount(labels.digit, minlength=10), np.bincount(mnist_digits))
    np.testing.assert_array_equal(labels.digit, mnist_digits[labels.mnist_index])
    assert labels.digit_margin.min() > 20  # every label is sure: e^20 to one, at the least
    assert len(np.unique(labels.mnist_index)) > 9_950
    assert (labels.mnist_index == np.arange(10_000)).sum() < 10  # the files are not in MNIST's order

    monkeypatch.setattr(labels_module, "match_to_mnist", lambda *a, **k: pytest.fail("the label cache was not used"))
    cached = labels_module.recover_labels("test", progress=False)
    np.testing.assert_array_equal(cached.digit, labels.digit)


def test_idx_errors():
    with pytest.raises(D.DataError, match="f: not an idx file"):
        labels_module.parse_idx(b"\x00\x00\x0d\x01" + b"\x00" * 8, "f")
    with pytest.raises(D.DataError, match=r"f: header says shape \(3,\), but 2 bytes follow"):
        labels_module.parse_idx(b"\x00\x00\x08\x01\x00\x00\x00\x03ab", "f")
    np.testing.assert_array_equal(labels_module.parse_idx(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x02ab")), [97, 98])
