"""Fixtures for tests/test_decode.cpp (io/decode): small JPEG and PNG files and what Pillow makes of
them with `Image.open(f).convert("RGB")` (timm's ImageFolder loader), computed without mokd.

Every case stores `<case>_file`, the encoded bytes ([n], one byte per value), and `<case>_rgb`,
Pillow's decoded RGB ([h, w, 3]). mokd's tensors have no uint8 type, so both are F16, which holds
every integer up to 2048 exactly, at half the size of I32. The error cases store only
`<case>_file`; Pillow itself refuses them (the script checks that it does).

The files are written by Pillow where Pillow can write them. Pillow cannot write 2/4-bit grey,
16-bit colour, interlaced or out-of-palette PNGs, nor a YCCK JPEG; those are assembled here (PNG:
zlib + struct, byte by byte from the specification) or, for YCCK, encoded by the system's
libturbojpeg through ctypes (TurboJPEG turns CMYK input into a YCCK JPEG with an Adobe marker);
when that library is absent the YCCK case is left out and params.skipped says so. Only the
encoding comes from these writers: the expected pixels always come from Pillow's decoder.

params: cases.<case> (format, Pillow's mode after open, [h, w], what the case covers),
errors.<case> (the kind of failure the decoder must report: "truncated" or "corrupt", and
Pillow's own message), skipped (cases left out, with the reason).
"""
import ctypes
import ctypes.util
import io
import struct
import warnings
import zlib

import numpy as np
import torch
from PIL import Image

from ._common import save

REQUIRES = ("torch", "numpy", "safetensors", "pillow")

# Odd sizes: partial MCUs on both axes. The four main JPEG cases are 53 x 37; the rest are smaller
# to keep the fixture small.
BIG_H, BIG_W = 53, 37
SMALL_H, SMALL_W = 19, 13


def _content(h, w, seed, channels=3):
    """Smooth gradients, a disc and mild noise: realistic for JPEG, every value range touched."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    chans = [255 * x / max(w - 1, 1), 255 * y / max(h - 1, 1),
             127.5 + 127.5 * np.sin((x + 2 * y) / 5.0), 255 * ((x * y) % 17) / 16.0]
    a = np.stack(chans[:channels], -1)
    disc = (x - w / 3) ** 2 + (y - h / 2) ** 2 < (min(h, w) / 4) ** 2
    a[disc] = 255 - a[disc]
    a += rng.normal(0, 6, a.shape)
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def _image(mode, a):
    """A Pillow image of mode `mode` holding array a ([h, w] or [h, w, c])."""
    return Image.frombytes(mode, (a.shape[1], a.shape[0]), np.ascontiguousarray(a).tobytes())


def _pillow_save(im, fmt, **kw):
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _pillow_rgb(data):
    with Image.open(io.BytesIO(data)) as im, warnings.catch_warnings():
        # P with one alpha per entry warns that RGBA would keep the transparency: RGB is wanted.
        warnings.simplefilter("ignore", UserWarning)
        mode = im.mode
        rgb = np.asarray(im.convert("RGB"))
    return mode, rgb


# ------------------------------------------------------------------ PNG written byte by byte

def _chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _pack_rows(a, bits):
    """Rows of samples (uint8 or uint16 [h, n]) packed at `bits` per sample, big-endian."""
    if bits == 16:
        return [r.astype(">u2").tobytes() for r in a]
    if bits == 8:
        return [r.astype(np.uint8).tobytes() for r in a]
    per = 8 // bits
    out = []
    for r in a:
        r = np.concatenate([r, np.zeros((-len(r)) % per, r.dtype)]).reshape(-1, per).astype(np.uint8)
        shifts = np.arange(per - 1, -1, -1) * bits
        out.append((r << shifts).sum(1).astype(np.uint8).tobytes())
    return out


ADAM7 = [(0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2), (0, 1, 2, 2),
         (1, 0, 2, 1)]  # (row start, column start, row step, column step) of the 7 passes


def _png(samples, bits, color_type, palette=None, trns=None, interlace=False):
    """A PNG of `samples` ([h, w, c] or [h, w], values < 2**bits), filter type 0 on every row."""
    s = samples if samples.ndim == 3 else samples[:, :, None]
    h, w, c = s.shape
    flat = s.reshape(h, w * c)
    if interlace:
        rows = []
        for y0, x0, dy, dx in ADAM7:
            sub = s[y0::dy, x0::dx]
            if sub.size:
                rows += _pack_rows(sub.reshape(sub.shape[0], -1), bits)
    else:
        rows = _pack_rows(flat, bits)
    raw = b"".join(b"\x00" + r for r in rows)
    out = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bits, color_type,
                                                              0, 0, int(interlace)))
    if palette is not None:
        out += _chunk(b"PLTE", bytes(np.asarray(palette, np.uint8).reshape(-1)))
    if trns is not None:
        out += _chunk(b"tRNS", trns)
    return out + _chunk(b"IDAT", zlib.compress(raw, 9)) + _chunk(b"IEND", b"")


# ------------------------------------------------------------------ YCCK through libturbojpeg

def _ycck_jpeg(cmyk):
    """cmyk [h, w, 4] encoded by libturbojpeg as a YCCK JPEG (4:2:0, quality 90); None without
    the library."""
    name = ctypes.util.find_library("turbojpeg")
    if not name:
        return None
    tj = ctypes.CDLL(name)
    tj.tjInitCompress.restype = ctypes.c_void_p
    tj.tjGetErrorStr2.restype = ctypes.c_char_p
    handle = ctypes.c_void_p(tj.tjInitCompress())
    h, w, _ = cmyk.shape
    src = np.ascontiguousarray(cmyk)
    buf, size = ctypes.POINTER(ctypes.c_ubyte)(), ctypes.c_ulong(0)
    TJPF_CMYK, TJSAMP_420 = 11, 2
    rc = tj.tjCompress2(handle, src.ctypes.data_as(ctypes.c_void_p), w, 0, h, TJPF_CMYK,
                        ctypes.byref(buf), ctypes.byref(size), TJSAMP_420, 90, 0)
    if rc != 0:
        raise RuntimeError(f"tjCompress2: {tj.tjGetErrorStr2(handle)}")
    data = ctypes.string_at(buf, size.value)
    tj.tjFree(buf)
    tj.tjDestroy(handle)
    return data


def _bytes_tensor(data):
    return torch.from_numpy(np.frombuffer(data, np.uint8).astype(np.float16))


def _marker_offsets(data, code):
    return [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == code]


def generate(out_dir):
    t, cases, errors, skipped = {}, {}, {}, {}

    def add(name, data, what):
        mode, rgb = _pillow_rgb(data)
        t[f"{name}_file"] = _bytes_tensor(data)
        t[f"{name}_rgb"] = torch.from_numpy(rgb.astype(np.float16))
        fmt = "PNG" if data[:4] == b"\x89PNG" else "JPEG"
        cases[name] = {"format": fmt, "mode": mode, "size": list(rgb.shape[:2]), "what": what}

    def add_error(name, data, kind):
        try:
            _pillow_rgb(data)
        except Exception as e:  # noqa: BLE001 - any refusal by Pillow is what is wanted
            message = f"{type(e).__name__}: {e}"
        else:
            raise RuntimeError(f"Pillow decodes the error case {name}")
        t[f"{name}_file"] = _bytes_tensor(data)
        errors[name] = {"kind": kind, "pillow": message}

    big = _image("RGB", _content(BIG_H, BIG_W, 1))
    # ---- JPEG (Pillow's encoder; subsampling 0 = 4:4:4, 1 = 4:2:2, 2 = 4:2:0)
    for ss, ss_name in [(2, "420"), (0, "444")]:
        for q in (75, 95):
            add(f"jpeg_rgb_{ss_name}_q{q}", _pillow_save(big, "JPEG", quality=q, subsampling=ss),
                f"YCbCr {ss_name}, quality {q}")
    rgb = _image("RGB", _content(SMALL_H, SMALL_W, 1))
    add("jpeg_rgb_422_progressive", _pillow_save(rgb, "JPEG", quality=90, subsampling=1,
                                                 progressive=True),
        "progressive, 4:2:2")
    add("jpeg_rgb_restart", _pillow_save(rgb, "JPEG", quality=85, restart_marker_blocks=3),
        "restart markers every 3 MCUs inside the scan")
    add("jpeg_rgb_adobe_rgb", _pillow_save(rgb, "JPEG", quality=90, keep_rgb=True),
        "RGB components (Adobe transform 0), no YCbCr")
    exif = Image.Exif()
    exif[0x0112] = 6  # an orientation tag: Pillow's convert() ignores it, so must the decoder
    add("jpeg_rgb_exif_icc_comment",
        _pillow_save(rgb, "JPEG", quality=80, exif=exif.tobytes(), comment=b"\xff\xd9 in text",
                     icc_profile=b"\x00" * 300),
        "APP1 EXIF (orientation 6, not applied), APP2 ICC, COM holding 0xFF 0xD9")
    gray = _image("L", _content(SMALL_H, SMALL_W, 2, 1)[:, :, 0])
    add("jpeg_gray", _pillow_save(gray, "JPEG", quality=90), "one component: L replicated")
    cmyk = _image("CMYK", _content(SMALL_H, SMALL_W, 3, 4))
    add("jpeg_cmyk", _pillow_save(cmyk, "JPEG", quality=90),
        "Adobe CMYK (stored inverted): CMYK;I, then Pillow's cmyk2rgb")
    ycck = _ycck_jpeg(_content(SMALL_H, SMALL_W, 4, 4))
    if ycck is None:
        skipped["jpeg_ycck"] = "libturbojpeg not found to write it"
    else:
        add("jpeg_ycck", ycck, "Adobe YCCK (transform 2), written by libturbojpeg")
    base = _pillow_save(rgb, "JPEG", quality=90)
    assert base[-2:] == b"\xff\xd9"
    add("jpeg_extraneous_bytes", base[:-2] + b"\x00" * 40 + b"\xff\xd9",
        "40 junk bytes before EOI: libjpeg warns, Pillow decodes")
    add("jpeg_trailing_garbage", base + b"garbage after the end" * 3,
        "bytes after EOI are ignored")
    sos = _marker_offsets(base, 0xDA)[0]
    add_error("jpeg_truncated_scan", base[:sos + (len(base) - sos) // 2], "truncated")
    add_error("jpeg_truncated_no_eoi", base[:-2], "truncated")
    add_error("jpeg_truncated_header", base[:sos - 20], "truncated")
    prog = _pillow_save(rgb, "JPEG", quality=90, progressive=True)
    last_sos = _marker_offsets(prog, 0xDA)[-1]
    add_error("jpeg_truncated_progressive", prog[:last_sos], "truncated")

    # ---- PNG written by Pillow
    add("png_rgb", _pillow_save(rgb, "PNG"), "RGB 8-bit")
    rgba = _content(SMALL_H, SMALL_W, 5, 4)
    rgba[:5, :, 3] = 0  # fully transparent rows keep their colour: no compositing, no premultiply
    add("png_rgba", _pillow_save(_image("RGBA", rgba), "PNG"), "RGBA: alpha dropped")
    la = _content(SMALL_H, SMALL_W, 6, 2)
    add("png_la", _pillow_save(_image("LA", la), "PNG"), "LA: L replicated, alpha dropped")
    add("png_l", _pillow_save(gray, "PNG"), "L 8-bit")
    add("png_l_trns", _pillow_save(gray, "PNG", transparency=17), "L with tRNS: ignored")
    add("png_rgb_trns", _pillow_save(rgb, "PNG", transparency=(1, 2, 3)), "RGB with tRNS: ignored")
    pal = _image("P", _content(SMALL_H, SMALL_W, 7, 1)[:, :, 0] // 32)
    colors = np.random.default_rng(8).integers(0, 256, (8, 3), dtype=np.uint8)
    pal.putpalette(bytes(colors.reshape(-1)))
    add("png_p_trns_bytes", _pillow_save(pal, "PNG", transparency=bytes([0, 64, 128, 255, 7])),
        "P 4-bit with an alpha per palette entry: palette used, transparency dropped")
    pal8 = pal.copy()
    pal8.putpalette(bytes(np.random.default_rng(15).integers(0, 256, 60, dtype=np.uint8)))
    add("png_p_trns_index", _pillow_save(pal8, "PNG", transparency=3),
        "P 8-bit (20 colours) with one transparent index")
    bw = _image("L", _content(SMALL_H, SMALL_W, 9, 1)[:, :, 0]).point(lambda v: 255 * (v > 127)).convert("1")
    add("png_1bit", _pillow_save(bw, "PNG"), "mode 1: 0 or 255")
    i16 = _content(SMALL_H, SMALL_W, 10, 1)[:, :, 0].astype(np.uint16) * 257
    i16[:, : SMALL_W // 3] //= 300  # some values below 256, kept; the rest clamp to 255
    add("png_gray16", _pillow_save(_image("I;16", i16.astype("<u2")), "PNG"),
        "16-bit grey: mode I;16, convert clamps at 255 (not the high byte)")

    # ---- PNG written here: what Pillow's encoder cannot make
    g = _content(SMALL_H, SMALL_W, 11, 1)[:, :, 0]
    add("png_gray2", _png(g >> 6, 2, 0), "2-bit grey: v * 0x55")
    add("png_gray4", _png(g >> 4, 4, 0), "4-bit grey: v * 0x11")
    add("png_p1", _png(g >> 7, 1, 3, palette=[[200, 10, 30], [5, 250, 90]]), "1-bit palette")
    add("png_p2_short_palette", _png(g >> 6, 2, 3, palette=[[1, 2, 3], [90, 80, 70]]),
        "2-bit indices 2 and 3 beyond a 2-entry palette: Pillow gives black")
    c16 = np.minimum(_content(SMALL_H, SMALL_W, 12, 4).astype(np.int64) * 257 + np.arange(4) * 40, 65535)
    c16 = c16.astype(np.uint16)
    add("png_rgb16", _png(c16[:, :, :3], 16, 2), "16-bit RGB: high byte")
    add("png_rgba16", _png(c16, 16, 6), "16-bit RGBA: high byte, alpha dropped")
    add("png_la16", _png(c16[:, :, :2], 16, 4), "16-bit LA: mode RGBA, high byte of L")
    add("png_rgb_interlaced", _png(_content(SMALL_H, SMALL_W, 13), 8, 2, interlace=True), "Adam7")
    add("png_p4_interlaced_trns", _png(g >> 4, 4, 3, palette=np.random.default_rng(14).integers(
        0, 256, (16, 3)), trns=bytes(range(0, 160, 10)), interlace=True), "Adam7, 4-bit palette")
    add("png_gray16_interlaced", _png(i16, 16, 0, interlace=True), "Adam7, 16-bit grey")

    png = _pillow_save(rgb, "PNG")
    add("png_no_iend", png[:-12], "no IEND chunk: Pillow decodes")
    idat = png.index(b"IDAT")
    n = struct.unpack(">I", png[idat - 4:idat])[0]
    add_error("png_truncated", png[:idat + 4 + n // 2], "truncated")
    body = bytearray(png[idat:idat + 4 + n])
    for k in range(20, 60):
        body[4 + k] ^= 0x5A  # damage the deflate stream; the chunk's CRC is made to match
    bad = png[:idat] + bytes(body) + struct.pack(">I", zlib.crc32(bytes(body))) + png[idat + 8 + n:]
    add_error("png_corrupt_deflate", bad, "corrupt")

    save(out_dir, "data_decode", t, {"cases": cases, "errors": errors, "skipped": skipped})
