"""python -m examples.word2vec.texts DIR: real English text and a word-similarity file, offline.

gensim's wheel carries small real corpora and evaluation sets in gensim/test/test_data (no
download at run time): the Lee background corpus (314 news articles), a shortened dump of the
first English Wikipedia articles, and WordSim-353. This writes, into DIR,

    lee.txt        the Lee corpus, one article a line, lowercase words ([a-z'] runs)
    wiki.txt       the Wikipedia articles' text (markup stripped), one article a line, likewise
    text.txt       both together: the corpus docs/training.md's figures were measured on
    wordsim353.tsv word, word, human score (copied as it is)

gensim is only the carrier of those files (pip install -e '.[text]'); it is never imported,
and nothing of it is needed to train: `python -m examples.word2vec --corpus DIR/text.txt
--eval-pairs DIR/wordsim353.tsv`.
"""

from __future__ import annotations

import argparse
import bz2
import importlib.util
import re
import shutil
from pathlib import Path

WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
WIKI_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"


def test_data() -> Path:
    spec = importlib.util.find_spec("gensim")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("gensim is not installed: pip install -e '.[text]' (it only carries "
                         "the text files; nothing of it is imported)")
    return Path(next(iter(spec.submodule_search_locations))) / "test" / "test_data"


def words(text: str) -> str:
    return " ".join(WORD.findall(text.lower()))


def wiki_articles(xml: str) -> list[str]:
    """The text of each article, with templates, tables, references, links' targets, files and
    tags removed."""
    articles = []
    for body in re.findall(r"<text[^>]*>(.*?)</text>", xml, flags=re.DOTALL):
        if body.lstrip().lower().startswith("#redirect"):
            continue
        text = re.sub(r"&lt;ref[^&]*?/&gt;|&lt;ref.*?&lt;/ref&gt;", " ", body, flags=re.DOTALL)
        text = re.sub(r"&lt;.*?&gt;|&[a-z]+;", " ", text, flags=re.DOTALL)
        for _ in range(3):  # nested {{...}} and {|...|}
            text = re.sub(r"\{\{[^{}]*\}\}|\{\|.*?\|\}", " ", text, flags=re.DOTALL)
        text = re.sub(r"\[\[(?:file|image|category):[^\]]*\]\]", " ", text, flags=re.IGNORECASE)
        text = re.sub(r"\[\[(?:[^\]|]*\|)?([^\]]*)\]\]", r"\1", text)  # [[target|shown]]
        text = re.sub(r"\[https?://\S+\s?([^\]]*)\]", r"\1", text)
        line = words(text)
        if len(line.split()) >= 50:
            articles.append(line)
    return articles


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m examples.word2vec.texts",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="directory to write the files into")
    out = parser.parse_args(argv).out
    out.mkdir(parents=True, exist_ok=True)
    data = test_data()
    lee = [words(line) for line in (data / "lee_background.cor").read_text().splitlines()]
    lee = [line for line in lee if line]
    wiki = wiki_articles(bz2.decompress((data / WIKI_FILE).read_bytes()).decode("utf-8"))
    (out / "lee.txt").write_text("\n".join(lee) + "\n")
    (out / "wiki.txt").write_text("\n".join(wiki) + "\n")
    (out / "text.txt").write_text("\n".join(lee + wiki) + "\n")
    shutil.copyfile(data / "wordsim353.tsv", out / "wordsim353.tsv")
    tokens = sum(len(line.split()) for line in lee + wiki)
    print(f"wrote {out}/text.txt: {len(lee)} Lee articles and {len(wiki)} Wikipedia articles, "
          f"{tokens} words; {out}/wordsim353.tsv")


if __name__ == "__main__":
    main()
