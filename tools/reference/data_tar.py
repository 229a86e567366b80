"""Fixtures for tests/test_readers.cpp (io/tar, io/tar_shards): three small tar shards in the
WebDataset layout written by Python's tarfile, one per header format, and what a tarfile walk finds
in them, computed without mokd.

- data_tar_gnu.tar (GNU format): GNU long names (type 'L') for both members of a sample, a folder,
  a symbolic and a hard link, members without an extension or with a second one (key.seg.png), a
  folder name holding a dot, an extension in capitals, a .cls before its image;
- data_tar_pax.tar (pax format): a global header, pax `path` records for a long and a non-ASCII
  name, a custom record, and one member whose size is only in its pax `size` record (the ustar
  size field is zeroed after writing, the checksum recomputed), so that the next header is found
  only by honouring it;
- data_tar_ustar.tar (ustar format): a long name split into the prefix and name fields, an empty
  image, images of exactly one block.

The walk: tarfile's members in archive order, regular files only, grouped as WebDataset does
(key and extension from its regular expression `^((?:.*/|)[^.]+)[.]([^/]*)$`, extension lowercased,
a new sample whenever the key changes); a sample's image is its jpg/jpeg/png member, its label the
int() of its cls member's text. For each shard <case> it stores <case>_offsets (tarfile's
offset_data of each image), <case>_sizes, <case>_labels (I64) and <case>_images (every image's
bytes, as read by tarfile's extractfile, concatenated; F16, which holds bytes exactly). The image
bytes are random (the tests are structural: which bytes, which label).

params.<case>: file, sha256 (of the .tar as written), format, members (each sample's image member
name, in order).
"""
import hashlib
import io
import random
import re
import tarfile

import torch

from ._common import save, save_bytes

REQUIRES = ("torch", "safetensors")

MTIME = 1_700_000_000
KEY = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")  # WebDataset's base_plus_ext
LONG_DIR = "train/" + "long_folder_name_" * 7  # > 100 characters with the file name


def _file(name, data, pax=None):
    return ("file", name, data, pax)


def _rand(n, seed):
    return random.Random(seed).randbytes(n)


def _write(entries, fmt, pax_headers=None):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, pax_headers=pax_headers or {}) as tf:
        for kind, name, data, pax in entries:
            ti = tarfile.TarInfo(name)
            ti.mtime = MTIME
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = "mokd"
            if pax:
                ti.pax_headers = dict(pax)
            if kind == "file":
                ti.mode = 0o644
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
            elif kind == "dir":
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(ti)
            elif kind in ("symlink", "hardlink"):
                ti.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
                ti.linkname = data
                tf.addfile(ti)
    return buf.getvalue()


def _zero_ustar_size(tar, member_name):
    """The tar with `member_name`'s ustar size field zeroed (its pax record keeps the size) and the
    header checksum recomputed."""
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        m = tf.getmember(member_name)
    h = m.offset_data - 512  # the member's own header, after its pax header
    b = bytearray(tar)
    b[h + 124:h + 136] = b"00000000000\0"
    b[h + 148:h + 156] = b" " * 8
    b[h + 148:h + 156] = b"%06o\0 " % sum(b[h:h + 512])
    return bytes(b)


def _gnu():
    return _write([
        ("dir", "train/", None, None),
        _file("train/000001.jpg", _rand(300, 1)),
        _file("train/000001.cls", b"3"),
        _file("train/000002.JPEG", _rand(512, 2)),
        _file("train/000002.json", b'{"note": 1}'),
        _file("train/000002.cls", b"0\n"),
        _file(LONG_DIR + "/sample_with_a_long_name.png", _rand(513, 3)),
        _file(LONG_DIR + "/sample_with_a_long_name.cls", b" 12 \n"),
        ("symlink", "train/link.jpg", "000001.jpg", None),
        _file("train/v1.2/000003.png", _rand(1500, 4)),
        _file("train/v1.2/000003.cls", b"7"),
        _file("train/v1.2/000003.seg.png", _rand(40, 5)),
        ("hardlink", "train/hard.cls", "train/000001.cls", None),
        _file("README", b"not part of a sample"),
        _file("train/000004.cls", b"1"),
        _file("train/000004.jpeg", _rand(1, 6)),
        _file("train/000005.jpg", _rand(4000, 7)),
        _file("train/000005.cls", b"5"),
    ], tarfile.GNU_FORMAT)


def _pax():
    tar = _write([
        _file("\u00fcmlaut/\u00c4rger-01.jpg", _rand(200, 11)),
        _file("\u00fcmlaut/\u00c4rger-01.cls", b"2"),
        _file(LONG_DIR + "/pax_long_name.png", _rand(700, 12)),
        _file(LONG_DIR + "/pax_long_name.cls", b"4"),
        _file("plain/000010.jpg", _rand(1025, 13), pax={"size": "1025"}),
        _file("plain/000010.cls", b"9"),
        _file("plain/000011.jpg", _rand(64, 14), pax={"mokd.note": "a custom record"}),
        _file("plain/000011.cls", b"1"),
    ], tarfile.PAX_FORMAT, pax_headers={"comment": "mokd fixture"})
    return _zero_ustar_size(tar, "plain/000010.jpg")


def _ustar():
    prefixed = "a" * 60 + "/" + "b" * 60 + "/" + "c" * 50
    return _write([
        _file(prefixed + ".jpg", _rand(512, 21)),
        _file(prefixed + ".cls", b"6"),
        _file("short/empty.png", b""),
        _file("short/empty.cls", b"0"),
        _file("short/one_block.jpg", _rand(1024, 22)),
        _file("short/one_block.cls", b"3"),
    ], tarfile.USTAR_FORMAT)


def _walk(tar):
    """Samples of a shard as WebDataset groups them: [(image member, label)]."""
    samples, cur = [], None

    def finish(g):
        if g is not None and "image" in g:
            samples.append((g["image"], g["label"]))

    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        for m in tf:
            if not m.isreg():
                continue
            match = KEY.match(m.name)
            if not match:
                continue
            key, ext = match.group(1), match.group(2).lower()
            if cur is None or cur["key"] != key:
                finish(cur)
                cur = {"key": key}
            if ext in ("jpg", "jpeg", "png"):
                cur["image"] = (m, tf.extractfile(m).read())
            elif ext == "cls":
                cur["label"] = int(tf.extractfile(m).read())
        finish(cur)
    return samples


def generate(out_dir):
    tensors, params = {}, {}
    for case, make, fmt in (("gnu", _gnu, "GNU"), ("pax", _pax, "PAX"), ("ustar", _ustar, "USTAR")):
        tar = make()
        file_name = f"data_tar_{case}.tar"
        save_bytes(out_dir, file_name, tar)
        samples = _walk(tar)
        tensors[f"{case}_offsets"] = torch.tensor([m.offset_data for (m, _), _ in samples])
        tensors[f"{case}_sizes"] = torch.tensor([m.size for (m, _), _ in samples])
        tensors[f"{case}_labels"] = torch.tensor([label for _, label in samples])
        data = b"".join(d for (_, d), _ in samples)
        tensors[f"{case}_images"] = torch.tensor(list(data), dtype=torch.float16)
        params[case] = {"file": file_name, "sha256": hashlib.sha256(tar).hexdigest(), "format": fmt,
                        "members": [m.name for (m, _), _ in samples]}
    save(out_dir, "data_tar", tensors, params)
