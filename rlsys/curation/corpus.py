"""The embedded labelled corpus: clean prose mixed with planted junk, exact and near duplicates.

Every row carries its ground truth, so each filter can be measured:
  `curation_label`  clean | junk | exact_dup | near_dup
  `curation_kind`   what was planted (the junk type, or how a duplicate differs from its original)
Labels follow the order of the rows: the first member of a duplicate group is `clean` and later ones are
duplicates, which is what "keep the first occurrence" dedup should remove. Offline and deterministic per seed.
"""
from __future__ import annotations

import random
import unicodedata

from rlsys.curation.prose import ADJECTIVES, NOUNS, Prose, plural

JUNK_SHARE, EXACT_SHARE, NEAR_SHARE = 0.22, 0.08, 0.12
BLOCKLISTED_PHRASES = ["Visit our online casino tonight and claim free viagra samples.",
                       "Click for xxx videos and cheap cialis with every order."]


def normalized(text: str) -> str:
    """What exact deduplication compares: NFKC, case-folded, whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


class JunkWriter:
    """One generator per kind of junk that web crawls are known for."""

    def __init__(self, rng: random.Random, prose: Prose):
        self.rng, self.prose = rng, prose

    def repetition_spam(self) -> str:
        noun = self.rng.choice(NOUNS)
        line = self.rng.choice([f"Best deals on {plural(noun)} today! Click here to buy now.",
                                f"cheap {noun} best {noun} buy {noun} online {noun} sale {noun} discount"])
        return "\n".join([line] * self.rng.randint(8, 30))

    def char_spam(self) -> str:
        run = self.rng.choice("MZA!h") * self.rng.randint(60, 400)
        words = " ".join(self.prose.word() for _ in range(self.rng.randint(0, 8)))
        return f"{words} {run}".strip()

    def symbol_soup(self) -> str:
        symbols = "#$%&*@^~<>|+=/\\{}[]"
        tokens = ["".join(self.rng.choice(symbols + "0123456789") for _ in range(self.rng.randint(1, 6)))
                  for _ in range(self.rng.randint(40, 160))]
        return "\n".join(" ".join(tokens[i:i + 12]) for i in range(0, len(tokens), 12))

    def boilerplate(self) -> str:
        lines = ["Home | About Us | Products | Blog | Contact", "Sign in", "Register", "Search",
                 "We use cookies to improve your experience. By continuing you accept our cookie policy.",
                 "Privacy Policy | Terms of Use | Sitemap", "Follow us on Facebook, Twitter and Instagram",
                 "Subscribe to our newsletter", "Share this page", "Previous | Next", "Back to top",
                 f"Copyright {self.rng.randint(1998, 2024)} {self.prose.place()} Ltd. All rights reserved."]
        return "\n".join(self.rng.sample(lines, self.rng.randint(5, len(lines))))

    def short(self) -> str:
        return self.rng.choice(["Thanks for sharing!", "Great post, very helpful.", "First!", "Page not found.",
                                "Loading...", "This item is out of stock.", f"Photo of the {self.prose.word()}."])

    def bullet_list(self) -> str:
        bullet = self.rng.choice(["-", "•"])
        return "\n".join(f"{bullet} {self.rng.choice(ADJECTIVES)} {self.rng.choice(NOUNS)}"
                         for _ in range(self.rng.randint(10, 40)))

    def ellipsis_teasers(self) -> str:
        topic = self.prose.topic()
        return "\n".join(self.prose.sentence(topic)[:self.rng.randint(30, 70)].rstrip() + "..."
                         for _ in range(self.rng.randint(6, 15)))

    def blocklisted(self) -> str:
        paragraphs = self.prose.document().split("\n\n")
        paragraphs.insert(self.rng.randint(0, len(paragraphs)), self.rng.choice(BLOCKLISTED_PHRASES))
        return "\n\n".join(paragraphs)

    def placeholder(self) -> str:
        lorem = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut "
                 "labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco.")
        code = "function init() { var menu = document.getElementById('menu'); menu.style.display = 'none'; }"
        return "\n\n".join([self.rng.choice([lorem, code])] * self.rng.randint(1, 4))

    def word_salad(self) -> str:
        """Shuffled words in sentence-shaped lines: passes the rule filters, left to the quality classifier."""
        words = [w.strip(".,").lower() for w in self.prose.document().split()]
        self.rng.shuffle(words)
        sentences, i = [], 0
        while i < len(words):
            n = self.rng.randint(8, 18)
            chunk = words[i:i + n]
            sentences.append(" ".join(chunk).capitalize() + ".")
            i += n
        return "\n\n".join(" ".join(sentences[j:j + 4]) for j in range(0, len(sentences), 4))

    KINDS = ("repetition_spam", "char_spam", "symbol_soup", "boilerplate", "short", "bullet_list",
             "ellipsis_teasers", "blocklisted", "placeholder", "word_salad")

    def write(self, kind: str) -> str:
        return getattr(self, kind)()


def exact_copy(text: str, rng: random.Random) -> tuple[str, str]:
    """The same text, or one that differs only in what normalisation removes (spacing, unicode forms)."""
    variant = rng.choice(["identical", "whitespace", "unicode"])
    if variant == "whitespace":
        return text.replace(". ", ".  ") + "\n", variant
    if variant == "unicode":
        return text.replace(" ", "\u00a0", 6), variant  # no-break spaces: NFKC turns them back into spaces
    return text, variant


def near_copy(text: str, rng: random.Random, prose: Prose, max_edit_rate: float) -> tuple[str, str]:
    """A copy with a few words replaced, deleted or inserted (up to `max_edit_rate` of the words)."""
    tokens = text.split(" ")
    editable = [i for i, t in enumerate(tokens) if t.isalpha() and t.islower()]
    edits = max(1, round(rng.uniform(0.2, 1.0) * max_edit_rate * len(tokens)))
    for index in sorted(rng.sample(editable, edits), reverse=True):
        operation = rng.choice(["replace", "delete", "insert"])
        if operation == "replace":
            tokens[index] = prose.word()
        elif operation == "delete":
            del tokens[index]
        else:
            tokens.insert(index, prose.word())
    return " ".join(tokens), "word_edits"


def label_in_order(rows: list[dict], groups: list[int | None]) -> None:
    """First member of each duplicate group stays clean; later members are exact or near duplicates."""
    seen: dict[int, set[str]] = {}
    for row, group in zip(rows, groups):
        if group is None:
            continue
        key = normalized(row["_body"])
        if group not in seen:
            seen[group] = {key}
            row["curation_label"], row["curation_kind"] = "clean", "clean"
            continue
        row["curation_label"] = "exact_dup" if key in seen[group] else "near_dup"
        seen[group].add(key)


def _mixed_rows(seed: int, num_rows: int, clean, junk, max_edit_rate: float) -> list[dict]:
    """Clean items, junk items and duplicates of clean items, shuffled and labelled; `_body` is what duplicates."""
    rng = random.Random(seed)
    prose = Prose(rng)
    writer = JunkWriter(rng, prose)
    n_junk, n_exact, n_near = (round(num_rows * s) for s in (JUNK_SHARE, EXACT_SHARE, NEAR_SHARE))
    n_clean = num_rows - n_junk - n_exact - n_near
    items = [(clean(prose), "clean", "clean", g) for g in range(n_clean)]
    items += [(junk(writer, kind), "junk", kind, None)
              for kind in (writer.KINDS[i % len(writer.KINDS)] for i in range(n_junk))]
    for share, copy in ((n_exact, "exact"), (n_near, "near")):
        for _ in range(share):
            body, _, _, group = items[rng.randrange(n_clean)]
            text, how = exact_copy(body, rng) if copy == "exact" else near_copy(body, rng, prose, max_edit_rate)
            items.append((text, f"{copy}_dup", how, group))
    rng.shuffle(items)
    rows = [{"_body": body, "curation_label": label, "curation_kind": kind} for body, label, kind, _ in items]
    label_in_order(rows, [group for *_, group in items])
    return rows


def pretrain_corpus(seed: int = 0, num_docs: int = 3000) -> list[dict]:
    """Rows of `text` with their labels."""
    rows = _mixed_rows(seed, num_docs, lambda prose: prose.document(),
                          lambda writer, kind: writer.write(kind), max_edit_rate=0.025)
    return [{"text": r.pop("_body"), **r} for r in rows]


JUNK_REPLY = "\x00"  # a junk chat row carries its planted reply after the prompt, behind this
PROMPT_OPENINGS = ["I am writing a short report and need help.", "My teacher asked a question I cannot answer.",
                   "I read an article about this and got confused.", "Could you help me with some history?"]


def chat_corpus(seed: int = 0, num_rows: int = 1500) -> list[dict]:
    """Rows of `messages` (one user prompt, one assistant reply); duplicates repeat the prompt."""
    rng = random.Random(seed + 1)

    def conversation(prose: Prose) -> str:
        topic = prose.topic()
        return " ".join([rng.choice(PROMPT_OPENINGS), prose.sentence(topic), prose.sentence(topic),
                         f"What happened to the {rng.choice(topic['nouns'])} of {topic['places'][0]}, "
                         "and why does it matter?"])

    rows = _mixed_rows(seed, num_rows, conversation,
                       lambda writer, kind: conversation(writer.prose) + JUNK_REPLY + writer.write(kind),
                       max_edit_rate=0.03)
    reply = Prose(rng)
    for row in rows:
        prompt, _, junk_reply = row.pop("_body").partition(JUNK_REPLY)
        answer = junk_reply or reply.document(paragraphs=(1, 3), sentences=(3, 6))
        row["messages"] = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
    return [{"messages": r.pop("messages"), **r} for r in rows]


def reference_texts(seed: int = 0, num_docs: int = 800) -> list[str]:
    """The "high quality" reference set for the quality classifier: clean prose from its own seed."""
    prose = Prose(random.Random(f"reference-{seed}"))
    return [prose.document() for _ in range(num_docs)]
