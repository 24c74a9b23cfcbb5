"""The Porter stemmer (M. F. Porter, "An algorithm for suffix stripping", 1980), with NLTK's extensions.

ROUGE with `use_stemmer=True` stems with nltk's `PorterStemmer()`, whose default mode adds a table
of irregular forms and a few rules to the paper (marked "NLTK" below); this is that stemmer, so our
ROUGE equals rouge-score's. Words are lowercased; nothing here splits text into words.

The paper's vocabulary: a consonant is a letter other than a, e, i, o, u, and other than a y after a
consonant. A word is [C](VC)^m[V] (runs of consonants C and vowels V); m is its *measure*:
m("tree") = 0, m("trouble") = 1, m("troubles") = 2. Each step strips or rewrites one suffix,
under a condition on the measure of what stays; the first rule whose suffix matches decides, even
when its condition fails. Examples: caresses -> caress, ponies -> poni, hopping -> hop,
relational -> relat, generalizations -> gener, happy -> happi, running -> run.
"""

IRREGULAR = {"skies": "sky", "sky": "sky", "dying": "die", "lying": "lie", "tying": "tie", "news": "news",
             "innings": "inning", "inning": "inning", "outings": "outing", "outing": "outing",
             "cannings": "canning", "canning": "canning", "howe": "howe", "proceed": "proceed",
             "exceed": "exceed", "succeed": "succeed"}  # NLTK


def consonants(word: str) -> list[bool]:
    """True where word[i] is a consonant: "toy" -> [True, False, True], "syzygy" -> [T, F, T, F, T, F]."""
    flags = []
    for i, ch in enumerate(word):
        flags.append(ch not in "aeiou" and (ch != "y" or i == 0 or not flags[i - 1]))
    return flags


def measure(stem: str) -> int:
    """m in [C](VC)^m[V]: "tree" -> 0, "trouble" -> 1, "oaten" -> 2."""
    pattern = "".join("c" if c else "v" for c in consonants(stem))
    return pattern.count("vc")


def _has_vowel(stem: str) -> bool:
    return not all(consonants(stem))


def _double_consonant(word: str) -> bool:
    """*d: ends with a double consonant: "hopp", "fall", "hiss"."""
    return len(word) >= 2 and word[-1] == word[-2] and consonants(word)[-1]


def _cvc(word: str) -> bool:
    """*o: ends consonant-vowel-consonant, the last not w, x or y ("hop", "fil"); NLTK: also a 2-letter vc."""
    flags = consonants(word)
    if len(word) >= 3 and flags[-3] and not flags[-2] and flags[-1] and word[-1] not in "wxy":
        return True
    return len(word) == 2 and not flags[0] and flags[1]


def _apply(word: str, rules: list[tuple]) -> str:
    """The first rule (suffix, replacement, condition on the stem) whose suffix ends the word decides."""
    for suffix, replacement, condition in rules:
        if word.endswith(suffix):
            stem = word[:len(word) - len(suffix)]
            return stem + replacement if condition is None or condition(stem) else word
    return word


def _positive(stem: str) -> bool:
    return measure(stem) > 0


def _step1a(word: str) -> str:
    if word.endswith("ies") and len(word) == 4:  # NLTK: "ties" -> "tie", not "ti"
        return word[:-1]
    return _apply(word, [("sses", "ss", None), ("ies", "i", None), ("ss", "ss", None), ("s", "", None)])


def _step1b(word: str) -> str:
    if word.endswith("ied"):  # NLTK: "died" -> "die", "cried" -> "cri"
        return word[:-1] if len(word) == 4 else word[:-3] + "i"
    if word.endswith("eed"):
        return word[:-1] if measure(word[:-3]) > 0 else word
    for suffix in ("ed", "ing"):
        if word.endswith(suffix) and _has_vowel(word[:-len(suffix)]):
            stem = word[:-len(suffix)]
            break
    else:
        return word
    if stem.endswith(("at", "bl", "iz")):
        return stem + "e"
    if _double_consonant(stem):
        return stem[:-1] if stem[-1] not in "lsz" else stem
    return stem + "e" if measure(stem) == 1 and _cvc(stem) else stem


def _step1c(word: str) -> str:
    """y -> i after a consonant that is not the whole stem (NLTK; the paper: any stem with a vowel)."""
    return _apply(word, [("y", "i", lambda stem: len(stem) > 1 and consonants(stem)[-1])])


STEP2 = [("ational", "ate"), ("tional", "tion"), ("enci", "ence"), ("anci", "ance"), ("izer", "ize"),
         ("bli", "ble"), ("alli", "al"), ("entli", "ent"), ("eli", "e"), ("ousli", "ous"), ("ization", "ize"),
         ("ation", "ate"), ("ator", "ate"), ("alism", "al"), ("iveness", "ive"), ("fulness", "ful"),
         ("ousness", "ous"), ("aliti", "al"), ("iviti", "ive"), ("biliti", "ble"), ("fulli", "ful")]
STEP3 = [("icate", "ic"), ("ative", ""), ("alize", "al"), ("iciti", "ic"), ("ical", "ic"), ("ful", ""),
         ("ness", "")]
STEP4 = ["al", "ance", "ence", "er", "ic", "able", "ible", "ant", "ement", "ment", "ent", "ion", "ou", "ism",
         "ate", "iti", "ous", "ive", "ize"]


def _step2(word: str) -> str:
    if word.endswith("alli") and _positive(word[:-4]):  # NLTK: alli -> al, then step 2 again
        return _step2(word[:-2])
    rules = [(s, r, _positive) for s, r in STEP2]  # "bli" is Porter's later fix of the paper's "abli"
    rules.append(("logi", "log", lambda stem: _positive(word[:-3])))  # NLTK
    return _apply(word, rules)


def _step3(word: str) -> str:
    return _apply(word, [(s, r, _positive) for s, r in STEP3])


def _step4(word: str) -> str:
    def condition(suffix):
        if suffix == "ion":
            return lambda stem: measure(stem) > 1 and stem[-1:] in ("s", "t")
        return lambda stem: measure(stem) > 1
    return _apply(word, [(s, "", condition(s)) for s in STEP4])


def _step5(word: str) -> str:
    if word.endswith("e"):
        stem = word[:-1]
        m = measure(stem)
        if m > 1 or (m == 1 and not _cvc(stem)):
            word = stem
    if word.endswith("ll") and measure(word[:-1]) > 1:
        word = word[:-1]
    return word


def stem(word: str) -> str:
    """The stem of one word, lowercased: "Generalizations" -> "gener", "caresses" -> "caress"."""
    word = word.lower()
    if word in IRREGULAR:
        return IRREGULAR[word]
    if len(word) <= 2:
        return word
    for step in (_step1a, _step1b, _step1c, _step2, _step3, _step4, _step5):
        word = step(word)
    return word
