"""Offline stand-ins of the data the multilingual front end downloads, in the formats it reads.

- `Cangjie5_TC.json` (from the model repo): a JSON list of "glyph<TAB>code" strings. The original
  (ChineseCangjieConverter._load_cangjie_mapping) fetches it with
  `hf_hub_download(REPO_ID, "Cangjie5_TC.json", cache_dir=<model folder>)`: it reads a hub cache
  INSIDE the model folder (`models--ResembleAI--chatterbox/refs/main` naming a snapshot that holds
  the file), not the copy `snapshot_download` leaves in the folder itself. `write_cangjie_files`
  writes both; without the cache the original logs a warning and leaves Chinese characters as they
  are (offline that happens to a real snapshot folder too).
  Ours covers every CJK Unified Ideograph (U+4E00-U+9FFF) with made-up codes: three of the 25
  Cangjie keys (a-y) from the code point, two neighbouring glyphs sharing each code, so that every
  second glyph takes the index suffix ("abc1") that the converter writes for a shared code.
- spacy-pkuseg's default model (`spacy_ontonotes`, downloaded from the package's release page into
  `$PKUSEG_HOME`, default ~/.pkuseg, when `pkuseg()` is first built): a model of the same format
  (features.msgpack, weights.npz) trained by spacy_pkuseg.train on a small fixed segmented corpus,
  with the zip whose presence tells spacy_pkuseg that the download is done.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import tempfile
import zipfile
from pathlib import Path
from typing import Dict, Iterator, List

from parity.fixtures import replace_dir

from .mtl_tokenizer_json import FILE_NAME, write_mtl_tokenizer_json, write_utf8_atomic

REPO_ID = "ResembleAI/chatterbox"
CANGJIE_FILE = "Cangjie5_TC.json"
CJK_FIRST, CJK_LAST = 0x4E00, 0x9FFF
CANGJIE_KEYS = "abcdefghijklmnopqrstuvwxy"

PKUSEG_MODEL = "spacy_ontonotes"  # spacy_pkuseg's default model name
PKUSEG_TRAIN_ITER = 5
PKUSEG_SEED = 0
# Segmented as a person would; the zh test sentence's words, in both the full-width punctuation of
# the text and the ASCII that NFKD turns it into.
PKUSEG_CORPUS = """今天 天气 很 好 ， 我们 一起 去 公园 散步 吧 。
你 喜欢 学习 中文 吗 ？
我 爱 北京 天安门 。
今天 天气 很 好 , 我们 一起 去 公园 散步 吧 。
你 喜欢 学习 中文 吗 ?
他 在 图书馆 看 书 。
这 是 一个 简单 的 句子 。
明天 我们 去 公园 散步 。
她 喜欢 听 音乐 和 唱歌 。
老师 说 学生 应该 多 读 书 。
北京 是 中国 的 首都 。
我 想 喝 一 杯 茶 。
你 今天 过 得 怎么样 ？
春天 来 了 ， 花 都 开 了 。
我们 一起 学习 中文 吧 。
天气 很 好 的 时候 我们 去 散步 。"""

ZIP_DATE = (1980, 1, 1, 0, 0, 0)


# ----------------------------------------------------------------------------- Cangjie mapping


def cangjie_code(cp: int) -> str:
    n = (cp - CJK_FIRST) // 2  # neighbours share a code
    return "".join(CANGJIE_KEYS[(n // 25 ** k) % 25] for k in (2, 1, 0))


def cangjie_entries() -> List[str]:
    return [f"{chr(cp)}\t{cangjie_code(cp)}" for cp in range(CJK_FIRST, CJK_LAST + 1)]


def cangjie_json_text() -> str:
    return json.dumps(cangjie_entries(), ensure_ascii=False, indent=0) + "\n"


def hub_cache_snapshot(model_dir: Path, revision: str) -> Path:
    """Where hf_hub_download(REPO_ID, ..., cache_dir=model_dir) looks for revision "main"."""
    return Path(model_dir) / f"models--{REPO_ID.replace('/', '--')}" / "snapshots" / revision


def write_cangjie_files(model_dir: Path) -> Dict[str, Path]:
    """The mapping beside the tokenizer (the hub layout) and in the hub cache inside the folder
    (where the original reads it); the snapshot's revision is the file's SHA-1, so the same bytes
    give the same path."""
    model_dir = Path(model_dir)
    text = cangjie_json_text()
    revision = hashlib.sha1(text.encode("utf-8")).hexdigest()
    snapshot = hub_cache_snapshot(model_dir, revision)
    snapshot.mkdir(parents=True, exist_ok=True)
    write_utf8_atomic(snapshot / CANGJIE_FILE, text)
    refs = snapshot.parent.parent / "refs"
    refs.mkdir(exist_ok=True)
    write_utf8_atomic(refs / "main", revision)
    write_utf8_atomic(model_dir / CANGJIE_FILE, text)
    return {"top": model_dir / CANGJIE_FILE, "cache": snapshot / CANGJIE_FILE}


# ----------------------------------------------------------------------------- pkuseg model


@contextlib.contextmanager
def _pkuseg_training_state() -> Iterator[None]:
    """spacy_pkuseg.train shuffles with the global `random` and rewrites the global config: seed
    the one, and give both back as they were afterwards."""
    from spacy_pkuseg import config

    saved_config, saved_random = dict(config.__dict__), random.getstate()
    random.seed(PKUSEG_SEED)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        config.__dict__.clear()
        config.__dict__.update(saved_config)
        random.setstate(saved_random)


def _zip_bytes(files: Dict[str, bytes]) -> bytes:
    """A zip with fixed dates, members in name order: the same content gives the same bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            z.writestr(info, files[name])
    return buf.getvalue()


def _deterministic_npz(path: Path) -> bytes:
    """np.savez stamps each member with the time: the same arrays, re-zipped with fixed dates."""
    import numpy as np

    members = {}
    with np.load(path) as npz:
        for key in npz.files:
            out = io.BytesIO()
            np.lib.format.write_array(out, np.ascontiguousarray(npz[key]), allow_pickle=False)
            members[f"{key}.npy"] = out.getvalue()
    return _zip_bytes(members)


def train_pkuseg_model() -> Dict[str, bytes]:
    """features.msgpack and weights.npz of a pkuseg model trained on PKUSEG_CORPUS."""
    import spacy_pkuseg

    with tempfile.TemporaryDirectory() as tmp, _pkuseg_training_state():
        corpus = Path(tmp) / "corpus.txt"
        corpus.write_text(PKUSEG_CORPUS + "\n", encoding="utf-8")
        out = Path(tmp) / "model"
        spacy_pkuseg.train(str(corpus), str(corpus), str(out), train_iter=PKUSEG_TRAIN_ITER)
        return {"features.msgpack": (out / "features.msgpack").read_bytes(),
                "weights.npz": _deterministic_npz(out / "weights.npz")}


def write_pkuseg_home(home: Path) -> Path:
    """A $PKUSEG_HOME where `spacy_pkuseg.pkuseg()` finds its default model without downloading:
    spacy_ontonotes.zip (the download; only its presence is checked) and spacy_ontonotes/."""
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    files = train_pkuseg_model()
    tmp = Path(tempfile.mkdtemp(prefix=f".{PKUSEG_MODEL}.", dir=home))
    for name, data in files.items():
        (tmp / name).write_bytes(data)
    replace_dir(tmp, home / PKUSEG_MODEL)
    zip_tmp = home / f"{PKUSEG_MODEL}.zip.tmp"
    zip_tmp.write_bytes(_zip_bytes(files))
    os.replace(zip_tmp, home / f"{PKUSEG_MODEL}.zip")
    return home


@contextlib.contextmanager
def pkuseg_home(home: Path) -> Iterator[Path]:
    """spacy_pkuseg reads $PKUSEG_HOME once, at import: point both the variable (for processes
    started inside) and the imported config at `home`."""
    from spacy_pkuseg import config

    saved_env, saved_home = os.environ.get("PKUSEG_HOME"), config.pkuseg_home
    os.environ["PKUSEG_HOME"] = str(home)
    config.pkuseg_home = str(home)
    try:
        yield Path(home)
    finally:
        config.pkuseg_home = saved_home
        if saved_env is None:
            os.environ.pop("PKUSEG_HOME", None)
        else:
            os.environ["PKUSEG_HOME"] = saved_env


def write_front_end_files(model_dir: Path) -> None:
    """The multilingual tokenizer JSON and the Cangjie mapping, as a hub snapshot (plus cache) has them."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    write_mtl_tokenizer_json(model_dir / FILE_NAME)
    write_cangjie_files(model_dir)
