"""Builds the committed `sota/data/text/sentences.txt.gz` (and its README) from the example sentences in
WordNet's glosses, keeping speakable, inoffensive clauses that no evaluation set contains.

Run: `python -m sota.data.make_sentences` (needs `apt-get install wordnet-base wamerican asterisk-core-sounds-en`
and the shared realdev manifests; it refuses to build without any of them, so no rebuild can leak test text).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from sota.data import grammar
from sota.data.sentences import DATA_FILE, asterisk_transcripts, manifest_texts, normalize_text, split_sentences, \
    text_stats

WORDNET = Path("/usr/share/wordnet")
DICTIONARY = Path("/usr/share/dict/american-english")  # wamerican (SCOWL): only a filter, none of it is shipped
REALDEV = Path(__file__).resolve().parents[3] / "shared" / "realdev"
OUT_DIR = Path(__file__).resolve().parent / "text"
COMMAND = "python -m sota.data.make_sentences"
MIN_WORDS, MAX_WORDS = 3, 20

# A listener hears letters and a few pauses; digits, symbols, quotes and brackets would need a verbalizer.
_SPEAKABLE = re.compile(r"[A-Za-z][A-Za-z ,;:'!?.-]*")
_QUOTED = re.compile(r'"([^"]+)"')
# Words that make a clause: subject pronouns, auxiliaries, modals and their contractions, and imperative markers.
_CLAUSE_WORDS = frozenset("""
i you he she we they it who there is are was were am be been has have had do does did will would can could shall
should may might must please let's isn't aren't wasn't weren't don't doesn't didn't won't can't cannot couldn't
shouldn't wouldn't haven't hasn't hadn't mustn't i'm he's she's it's that's there's what's who's they're we're
you're i've we've they've you've i'll we'll he'll she'll they'll you'll it'll i'd we'd he'd she'd they'd you'd
""".split())
# Opening a statement, these lack the subject ("had only an imperfect understanding"); imperatives use
# "be", "do" and "have", so those stay.
_SUBJECTLESS = frozenset("""
is are was were am has had does did been will would can could shall should may might must isn't aren't wasn't
weren't hasn't hadn't doesn't didn't won't can't couldn't shouldn't wouldn't mustn't
""".split())
# Before a finite verb: not an article, possessive, preposition or adverb ("a shabbily dressed man" is no clause).
_NOT_BEFORE_VERB = frozenset("""
a an the this that these those my your his her its our their some any no every each of in on at by for with from
to into onto about as than very so too more most less least not and or but nor
""".split())
# Profanity, slurs, sexual and drug terms and the most graphic violence; a sentence with any of them (or their
# plural) is dropped.
BLOCKLIST = frozenset("""
fuck fucking fucked shit shitty bitch bastard cunt dick cock pussy whore slut prostitute prostitution harlot
nigger nigga negro negroes darky coon spic kike chink gook wop dago faggot fag dyke queer tranny retard retarded
cripple midget rape raped rapist raping incest pedophile molest molested orgasm masturbate masturbation penis
vagina clitoris testicle testicles scrotum semen sperm ejaculate erection erotic porn pornography pornographic
sex sexy sexual sexually intercourse copulate copulation fornicate fornication adultery nude nudity naked
genitals genital buttocks breasts nipple condom brothel pimp lesbian homosexual gay suicide hitler nazi nazis
slave slaves slavery lynch lynched terrorist terrorism jihad heroin cocaine marijuana damn damned goddamn
bugger suffocate suffocated strangle strangled torture tortured massacre massacred genocide behead beheaded
mutilate mutilated
""".split())


def wordnet_examples(wordnet_dir: Path = WORDNET) -> Iterator[str]:
    """Every quoted example in the glosses of data.noun, data.verb, data.adj and data.adv, in file order."""
    for pos in ("noun", "verb", "adj", "adv"):
        with open(wordnet_dir / f"data.{pos}", encoding="latin-1") as f:
            for line in f:
                if line.startswith("  ") or " | " not in line:  # the licence header lines start with spaces
                    continue
                yield from (" ".join(ex.split()) for ex in _QUOTED.findall(line.split(" | ", 1)[1]))


def load_lexicon(path: Path = DICTIONARY) -> frozenset[str]:
    """Lowercase English word forms (possessive forms folded into their word)."""
    words = path.read_text(encoding="utf-8").split()
    return frozenset(w.lower().removesuffix("'s") for w in words)


def _usage(path: Path) -> dict[str, tuple[int, int]]:
    """lemma -> (senses tagged in WordNet's semantic concordance, synsets) from an index file."""
    out = {}
    with open(path, encoding="latin-1") as f:
        for line in f:
            if line.startswith(" "):
                continue
            parts = line.split()
            pointers = int(parts[3])
            out[parts[0]] = (int(parts[5 + pointers]), int(parts[2]))
    return out


def verb_forms(wordnet_dir: Path = WORDNET) -> frozenset[str]:
    """Past and third-person forms of WordNet's verbs: regular (-s, -es, -ies, -ed, -d, -ied) and irregular.

    An -s form counts only where the word is used more as a verb than as a noun: "stages" and "characters" are
    mostly plurals, "makes" and "irritates" are verbs.
    """
    verbs, nouns = _usage(wordnet_dir / "index.verb"), _usage(wordnet_dir / "index.noun")
    lemmas = {v for v in verbs if "_" not in v}
    forms = set()
    for v in lemmas:
        forms.update((v + "ed", v + "d"))
        if v.endswith("y"):
            forms.add(v[:-1] + "ied")
        if len(v) > 2 and v[-1] not in "aeiouwxy" and v[-2] in "aeiou":
            forms.add(v + v[-1] + "ed")  # stop -> stopped
        if verbs[v] >= nouns.get(v, (0, 0)):
            forms.update((v + "s", v + "es") + ((v[:-1] + "ies",) if v.endswith("y") else ()))
    with open(wordnet_dir / "verb.exc", encoding="latin-1") as f:
        for line in f:
            form, *bases = line.split()
            if not form.endswith("ing") and form not in bases:
                forms.add(form)
    return frozenset(forms - lemmas)  # a bare base form ("pencil", "fox") says nothing about a clause


def modifiers(wordnet_dir: Path = WORDNET) -> frozenset[str]:
    """Words WordNet uses more as adjectives or adverbs than as nouns: a verb form after one of them is a
    participle ("his mad contorted smile"), not a finite verb."""
    nouns = _usage(wordnet_dir / "index.noun")
    adjectives = {**_usage(wordnet_dir / "index.adv"), **_usage(wordnet_dir / "index.adj")}
    return frozenset(w for w, use in adjectives.items() if "_" not in w and use > nouns.get(w, (0, 0)))


def _words(sentence: str) -> list[str]:
    return sentence.rstrip(".!?").split()


def is_speakable(sentence: str, lexicon: frozenset[str]) -> bool:
    """Letters and basic punctuation only, one sentence, no abbreviations, every word in the lexicon."""
    if not _SPEAKABLE.fullmatch(sentence) or "." in sentence.rstrip(".!?") or "--" in sentence:
        return False
    for raw in _words(sentence):
        token = raw.strip(",;:'")
        if not token or raw.count("'") > 1 or (sum(c.isupper() for c in token) > 1) or \
                (len(token) == 1 and token not in "aAI"):
            return False  # acronyms ("NATO"), initials and quoted phrases
        for part in token.split("-"):
            if not part or part.lower().removesuffix("'s").removesuffix("'") not in lexicon:
                return False
    return True


def is_clause(sentence: str, verbs: frozenset[str], modifiers: frozenset[str] = frozenset()) -> bool:
    """True if the example has a subject pronoun, an auxiliary, or a finite verb form after a noun-like word,
    or opens with a capitalized verb (an imperative); WordNet's bare phrases ("an overflowing tub") fail."""
    raw = _words(sentence)
    words = [w.strip(",;:").lower() for w in raw]
    if words[0] in _SUBJECTLESS and not sentence.endswith("?"):
        return False  # WordNet's predicate-only examples ("was polite in a teasing manner") are no questions
    if _CLAUSE_WORDS.intersection(words):
        return True
    if raw[0][0].isupper() and raw[0].lower() not in _NOT_BEFORE_VERB and len(words) >= 3 and \
            not raw[0].endswith(","):
        return True  # capitalized openers are WordNet's full sentences ("Quit teasing your little brother")
    for i in range(1, len(words)):
        before = raw[i - 1]
        if words[i] in verbs and words[i - 1] not in _NOT_BEFORE_VERB and words[i - 1] not in modifiers \
                and not before.endswith((",", ";", ":")) and not words[i - 1].endswith("ly"):
            return True
    return False


def is_clean(sentence: str) -> bool:
    """No blocklisted word, including inside hyphenated compounds ("gang-raped")."""
    words = {p.lower().removesuffix("'s") for w in _words(sentence) for p in w.strip(",;:'").split("-")}
    return not any(w in BLOCKLIST or w.rstrip("s") in BLOCKLIST for w in words)


def proper_nouns(sentence: str) -> int:
    """Capitalized words after the first, other than "I": names keep a sentence far from everyday speech."""
    return sum(w[0].isupper() and w.strip(",;:") != "I" for w in _words(sentence)[1:])


def finish(sentence: str) -> str:
    """Capitalize the first letter and end with a full stop unless it already ends a sentence."""
    s = sentence.rstrip(",;: ")
    return s[0].upper() + s[1:] + ("" if s.endswith(("!", "?", ".")) else ".")


def held_out_texts(realdev: Path = REALDEV) -> set[str]:
    """Normalized evaluation texts (and their sentences): realdev ASR and AAC manifests and the Asterisk prompts."""
    manifests = [realdev / "asr" / "manifest.json", realdev / "aac" / "manifest.json"]
    missing = [str(p) for p in manifests if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"evaluation manifests not found: {', '.join(missing)}; the build excludes their "
                                f"texts and will not run without them")
    out: set[str] = set()
    for path in manifests:
        out |= manifest_texts(path)
    for said in asterisk_transcripts():
        out.update(split_sentences(said))
    return out


def select(examples: Iterable[str], lexicon: frozenset[str], verbs: frozenset[str], held_out: set[str],
           adjectives: frozenset[str] = frozenset(), max_proper_nouns: int = 2) -> tuple[list[str], dict[str, int]]:
    """The kept sentences in hash order, one per normalized form, and how many examples each filter dropped."""
    dropped = dict.fromkeys(("length", "unspeakable", "not_a_clause", "blocklist", "proper_nouns", "held_out",
                             "duplicate"), 0)
    kept: dict[str, str] = {}
    for ex in examples:
        if not MIN_WORDS <= len(ex.split()) <= MAX_WORDS:
            reason = "length"
        elif not is_speakable(ex, lexicon):
            reason = "unspeakable"
        elif not is_clean(ex):
            reason = "blocklist"
        elif not is_clause(ex, verbs, adjectives):
            reason = "not_a_clause"
        elif proper_nouns(ex) > max_proper_nouns:
            reason = "proper_nouns"
        else:
            sentence = finish(ex)
            key = normalize_text(sentence)
            if key in held_out:
                reason = "held_out"
            elif key in kept:
                reason = "duplicate"
                kept[key] = min(kept[key], sentence)  # the same choice whichever variant comes first
            else:
                kept[key] = sentence
                continue
        dropped[reason] += 1
    # A hash order rather than WordNet's (grouped by part of speech and topic), so any prefix is a fair sample.
    order = sorted(kept, key=lambda k: hashlib.blake2b(k.encode(), digest_size=8).hexdigest())
    return [kept[k] for k in order], dropped


def write_gzip(path: Path, lines: list[str]) -> None:
    """Write `lines` gzipped with mtime 0 and no file name, so the same lines give the same bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = ("\n".join(lines) + "\n").encode("utf-8")
    path.write_bytes(gzip.compress(data, compresslevel=9, mtime=0))


def readme(sentences: list[str], stats: dict, dropped: dict[str, int], examples: int, size: int) -> str:
    wps = stats["words_per_sentence"]
    questions, exclamations = (sum(s.endswith(end) for s in sentences) for end in "?!")
    spread = ", ".join(f"{wps[k]:g}" for k in ("p5", "p25", "p75", "p95", "max"))
    outside = f"{stats['distinct_words_outside_grammar']} ({stats['share_distinct_words_outside_grammar']:.1%})"
    dropped_lines = "\n".join(f"| {k.replace('_', ' ')} | {v} |" for k, v in dropped.items())
    return f"""# Natural English sentences

`sentences.txt.gz`: {stats['sentences']} distinct English sentences, one per line (UTF-8, gzip, {size / 1e6:.2f} MB),
read by `sota.data.sentences.natural_sentences()`. They give the synthetic speech corpus transcripts beyond the
grammar of `sota/data/grammar.py`.

## Source and licence

The example sentences inside the glosses of WordNet 3.0 (`data.noun`, `data.verb`, `data.adj`, `data.adv` of the
Debian package `wordnet-base`), selected and lightly edited (first letter capitalized, a full stop added) by
`sota/data/make_sentences.py`. WordNet's licence asks that this notice go with every copy:

> WordNet 3.0 Copyright 2006 by Princeton University. All rights reserved.
>
> Permission to use, copy, modify and distribute this software and database and its documentation for any
> purpose and without fee or royalty is hereby granted, provided that you agree to comply with the following
> copyright notice and statements, including the disclaimer, and that the same appear on ALL copies of the
> software, database and documentation, including modifications that you make for internal use or for
> distribution.
>
> THIS SOFTWARE AND DATABASE IS PROVIDED "AS IS" AND PRINCETON UNIVERSITY MAKES NO REPRESENTATIONS OR
> WARRANTIES, EXPRESS OR IMPLIED. BY WAY OF EXAMPLE, BUT NOT LIMITATION, PRINCETON UNIVERSITY MAKES NO
> REPRESENTATIONS OR WARRANTIES OF MERCHANTABILITY OR FITNESS FOR ANY PARTICULAR PURPOSE OR THAT THE USE OF THE
> LICENSED SOFTWARE, DATABASE OR DOCUMENTATION WILL NOT INFRINGE ANY THIRD PARTY PATENTS, COPYRIGHTS, TRADEMARKS
> OR OTHER RIGHTS.
>
> The name of Princeton University or Princeton may not be used in advertising or publicity pertaining to
> distribution of the software and/or database. Title to copyright in this software, database and any
> associated documentation shall at all times remain with Princeton University and LICENSEE agrees to preserve
> same.

The word list of Debian's `wamerican` (SCOWL) only decides which words count as English; none of it is shipped.

## Rebuild

```bash
apt-get install wordnet-base wamerican asterisk-core-sounds-en   # as root
{COMMAND}
```

The build reads `../shared/realdev/{{asr,aac}}/manifest.json` (every `text` and `references`) and the Asterisk
prompts' transcripts, and refuses to run without them: a sentence whose normalized form (lowercase, punctuation
removed, whitespace collapsed) equals one of those texts or one of their sentences is left out. Rebuilding from
the same packages gives the same bytes (gzip mtime 0, a fixed hash order).

## What was kept

Of {examples} quoted examples, a sentence is kept if it has {MIN_WORDS}-{MAX_WORDS} words; only letters, apostrophes
and `, ; : . ! ? -` (no digits, symbols, quotes, abbreviations or initials); every word in the English word list;
a clause (a subject pronoun, an auxiliary, a finite verb after a noun, or a capitalized imperative), so bare
phrases such as "an overflowing tub" go; no word of the blocklist in `make_sentences.py` (profanity, slurs,
sexual, drug and graphic-violence terms); at most two capitalized names.

| dropped because | examples |
|---|---|
{dropped_lines}

## Statistics (words after normalization)

| | |
|---|---|
| sentences | {stats['sentences']} |
| running words | {stats['words']} |
| distinct words | {stats['distinct_words']} |
| words per sentence: mean, median | {wps['mean']}, {wps['median']} |
| words per sentence: p5, p25, p75, p95, max | {spread} |
| questions, exclamations | {questions}, {exclamations} |
| distinct words outside the grammar's {len(grammar.VOCABULARY)} | {outside} |
| running words outside the grammar's vocabulary | {stats['share_running_words_outside_grammar']:.1%} |
"""


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    parser.add_argument("--realdev", type=Path, default=REALDEV)
    args = parser.parse_args(argv)
    held_out = held_out_texts(args.realdev)
    examples = list(wordnet_examples())
    sentences, dropped = select(examples, load_lexicon(), verb_forms(), held_out, modifiers())
    out = args.out_dir / Path(DATA_FILE).name
    write_gzip(out, sentences)
    stats = text_stats(sentences)
    (args.out_dir / "README.md").write_text(readme(sentences, stats, dropped, len(examples), out.stat().st_size),
                                            encoding="utf-8")
    print(json.dumps({"out": str(out), "bytes": out.stat().st_size, "dropped": dropped, **stats}, indent=1))
    return stats


if __name__ == "__main__":
    main()
