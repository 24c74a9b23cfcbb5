"""40 small Python function problems in HumanEval's shape, written for llmlab (no download).

Each problem is written once, compactly: the signature, a one-line description, a solution body,
and calls with their expected results. `python_problems()` turns them into HumanEval rows
{"task_id": "llmlab/0", "prompt", "canonical_solution", "test", "entry_point": "add_digits"}, where
the prompt is the signature and a docstring, the solution the indented body, and the test

    def check(candidate):
        assert candidate(1234) == 10
        ...

The first calls are shown as doctests in the prompt; all of them are asserted by `check`. Score a
completion with `llmlab.eval.code.humaneval_program(row, completion)` and `llmlab.eval.code.check`.
"""

# (signature, description, solution body, [(arguments, expected result)]); the first two calls are examples
PROBLEMS = [
    ("add_digits(n: int) -> int", "Sum of the decimal digits of the non-negative integer n.",
     "return sum(int(d) for d in str(n))", [("1234", "10"), ("0", "0"), ("9", "9"), ("1000001", "2")]),
    ("is_palindrome(text: str) -> bool", "Whether text reads the same backwards, ignoring case and anything "
     "that is not a letter or digit.",
     "chars = [c.lower() for c in text if c.isalnum()]\nreturn chars == chars[::-1]",
     [("'A man, a plan, a canal: Panama'", "True"), ("'hello'", "False"), ("''", "True"),
      ("'No lemon, no melon'", "True"), ("'ab'", "False")]),
    ("count_vowels(text: str) -> int", "Number of vowels (a, e, i, o, u, either case) in text.",
     "return sum(c in 'aeiouAEIOU' for c in text)", [("'Hello World'", "3"), ("'xyz'", "0"), ("'AEIOUaeiou'", "10")]),
    ("fizzbuzz(n: int) -> list", "The FizzBuzz strings for 1..n: 'Fizz' for multiples of 3, 'Buzz' for multiples "
     "of 5, 'FizzBuzz' for both, else the number as a string.",
     "out = []\nfor i in range(1, n + 1):\n    word = ('Fizz' if i % 3 == 0 else '') + ('Buzz' if i % 5 == 0 else '')\n"
     "    out.append(word or str(i))\nreturn out",
     [("5", "['1', '2', 'Fizz', '4', 'Buzz']"), ("0", "[]"),
      ("15", "['1', '2', 'Fizz', '4', 'Buzz', 'Fizz', '7', '8', 'Fizz', 'Buzz', '11', 'Fizz', '13', '14', "
             "'FizzBuzz']")]),
    ("second_largest(nums: list) -> int", "The second largest distinct value in nums, or None if there is none.",
     "values = sorted(set(nums))\nreturn values[-2] if len(values) >= 2 else None",
     [("[3, 1, 4, 1, 5]", "4"), ("[10, 9, 10, 8]", "9"), ("[7, 7]", "None"), ("[-2, -1]", "-2")]),
    ("flatten(nested: list) -> list", "All non-list items of an arbitrarily nested list, left to right.",
     "out = []\nfor item in nested:\n    out.extend(flatten(item) if isinstance(item, list) else [item])\n"
     "return out", [("[1, [2, [3, 4]], 5]", "[1, 2, 3, 4, 5]"), ("[]", "[]"), ("[[[]], ['a']]", "['a']")]),
    ("run_length_encode(text: str) -> str", "Run-length encoding: each run of a character becomes the character "
     "followed by the run's length.",
     "out, i = [], 0\nwhile i < len(text):\n    j = i\n    while j < len(text) and text[j] == text[i]:\n"
     "        j += 1\n    out.append(f'{text[i]}{j - i}')\n    i = j\nreturn ''.join(out)",
     [("'aaabcc'", "'a3b1c2'"), ("''", "''"), ("'zzzzzzzzzzzz'", "'z12'")]),
    ("run_length_decode(code: str) -> str", "Inverse of run-length encoding: 'a3b1' -> 'aaab' (counts may have "
     "several digits).",
     "import re\nreturn ''.join(ch * int(n) for ch, n in re.findall(r'(\\D)(\\d+)', code))",
     [("'a3b1c2'", "'aaabcc'"), ("'x10'", "'xxxxxxxxxx'"), ("''", "''")]),
    ("is_prime(n: int) -> bool", "Whether n is a prime number.",
     "if n < 2:\n    return False\nd = 2\nwhile d * d <= n:\n    if n % d == 0:\n        return False\n    d += 1\n"
     "return True", [("7", "True"), ("1", "False"), ("0", "False"), ("97", "True"), ("91", "False"), ("2", "True")]),
    ("primes_below(n: int) -> list", "All primes smaller than n, in increasing order.",
     "sieve = [True] * max(n, 2)\nsieve[0] = sieve[1] = False\nfor i in range(2, int(n ** 0.5) + 1):\n"
     "    if sieve[i]:\n        sieve[i * i::i] = [False] * len(sieve[i * i::i])\n"
     "return [i for i in range(n) if sieve[i]]",
     [("10", "[2, 3, 5, 7]"), ("2", "[]"), ("30", "[2, 3, 5, 7, 11, 13, 17, 19, 23, 29]")]),
    ("gcd(a: int, b: int) -> int", "Greatest common divisor of two non-negative integers, not both zero.",
     "while b:\n    a, b = b, a % b\nreturn a", [("12, 18", "6"), ("7, 0", "7"), ("17, 5", "1"), ("0, 9", "9")]),
    ("fibonacci(n: int) -> int", "The n-th Fibonacci number, with fibonacci(0) = 0 and fibonacci(1) = 1.",
     "a, b = 0, 1\nfor _ in range(n):\n    a, b = b, a + b\nreturn a",
     [("10", "55"), ("0", "0"), ("1", "1"), ("50", "12586269025")]),
    ("factorial(n: int) -> int", "n! for a non-negative integer n.",
     "result = 1\nfor i in range(2, n + 1):\n    result *= i\nreturn result",
     [("5", "120"), ("0", "1"), ("20", "2432902008176640000")]),
    ("reverse_words(sentence: str) -> str", "The words of sentence in reverse order, joined by single spaces.",
     "return ' '.join(reversed(sentence.split()))",
     [("'hello big world'", "'world big hello'"), ("'  one  '", "'one'"), ("''", "''")]),
    ("snake_to_camel(name: str) -> str", "A snake_case name in camelCase.",
     "first, *rest = name.split('_')\nreturn first + ''.join(w.capitalize() for w in rest)",
     [("'hello_big_world'", "'helloBigWorld'"), ("'x'", "'x'"), ("'make_it_so'", "'makeItSo'")]),
    ("camel_to_snake(name: str) -> str", "A camelCase name in snake_case.",
     "return ''.join('_' + c.lower() if c.isupper() else c for c in name)",
     [("'helloBigWorld'", "'hello_big_world'"), ("'x'", "'x'"), ("'parseHttpResponse'", "'parse_http_response'")]),
    ("are_anagrams(a: str, b: str) -> bool", "Whether a and b use the same letters the same number of times, "
     "ignoring case and spaces.",
     "return sorted(a.replace(' ', '').lower()) == sorted(b.replace(' ', '').lower())",
     [("'listen', 'silent'", "True"), ("'abc', 'abd'", "False"), ("'Dormitory', 'dirty room'", "True")]),
    ("most_common_char(text: str) -> str", "The character occurring most often in the non-empty text; on a tie, "
     "the one that occurs first.",
     "return max(text, key=lambda c: (text.count(c), -text.index(c)))",
     [("'hello'", "'l'"), ("'abab'", "'a'"), ("'zzyy y'", "'y'")]),
    ("merge_sorted(a: list, b: list) -> list", "The sorted merge of two sorted lists.",
     "out, i, j = [], 0, 0\nwhile i < len(a) and j < len(b):\n    if a[i] <= b[j]:\n        out.append(a[i])\n"
     "        i += 1\n    else:\n        out.append(b[j])\n        j += 1\nreturn out + a[i:] + b[j:]",
     [("[1, 4, 6], [2, 3, 7]", "[1, 2, 3, 4, 6, 7]"), ("[], [1]", "[1]"), ("[1, 1], [1]", "[1, 1, 1]")]),
    ("binary_search(items: list, target: int) -> int", "Index of target in the sorted list items, or -1.",
     "lo, hi = 0, len(items) - 1\nwhile lo <= hi:\n    mid = (lo + hi) // 2\n    if items[mid] == target:\n"
     "        return mid\n    if items[mid] < target:\n        lo = mid + 1\n    else:\n        hi = mid - 1\n"
     "return -1", [("[1, 3, 5, 7], 5", "2"), ("[1, 3, 5, 7], 4", "-1"), ("[], 1", "-1"), ("[2], 2", "0")]),
    ("rotate_right(items: list, k: int) -> list", "items rotated k places to the right (k may exceed the length).",
     "if not items:\n    return []\nk %= len(items)\nreturn items[-k:] + items[:-k] if k else list(items)",
     [("[1, 2, 3, 4, 5], 2", "[4, 5, 1, 2, 3]"), ("[1, 2, 3], 0", "[1, 2, 3]"), ("[1, 2, 3], 4", "[3, 1, 2]"),
      ("[], 3", "[]")]),
    ("chunk(items: list, size: int) -> list", "items split into consecutive lists of length size (the last may be "
     "shorter).", "return [items[i:i + size] for i in range(0, len(items), size)]",
     [("[1, 2, 3, 4, 5], 2", "[[1, 2], [3, 4], [5]]"), ("[], 3", "[]"), ("[1, 2], 5", "[[1, 2]]")]),
    ("transpose(matrix: list) -> list", "The transpose of a rectangular matrix given as a list of rows.",
     "return [list(row) for row in zip(*matrix)]",
     [("[[1, 2, 3], [4, 5, 6]]", "[[1, 4], [2, 5], [3, 6]]"), ("[[1]]", "[[1]]"), ("[]", "[]")]),
    ("word_count(text: str) -> dict", "How often each lowercased word occurs; words are separated by whitespace.",
     "counts = {}\nfor word in text.lower().split():\n    counts[word] = counts.get(word, 0) + 1\nreturn counts",
     [("'the cat The dog'", "{'the': 2, 'cat': 1, 'dog': 1}"), ("''", "{}")]),
    ("caesar(text: str, shift: int) -> str", "Shift each letter by shift places in the alphabet, keeping case; "
     "other characters stay.",
     "def move(c, base):\n    return chr((ord(c) - base + shift) % 26 + base)\n"
     "return ''.join(move(c, 97) if c.islower() else move(c, 65) if c.isupper() else c for c in text)",
     [("'abc', 1", "'bcd'"), ("'Hello, World!', 3", "'Khoor, Zruog!'"), ("'xyz', 3", "'abc'"), ("'abc', -1", "'zab'")]),
    ("to_binary(n: int) -> str", "The binary digits of the non-negative integer n, without a prefix.",
     "digits = ''\nwhile n:\n    digits = str(n % 2) + digits\n    n //= 2\nreturn digits or '0'",
     [("5", "'101'"), ("0", "'0'"), ("255", "'11111111'"), ("1024", "'10000000000'")]),
    ("roman_to_int(numeral: str) -> int", "The value of a Roman numeral.",
     "values = {'I': 1, 'V': 5, 'X': 10, 'L': 50, 'C': 100, 'D': 500, 'M': 1000}\ntotal = 0\n"
     "for i, c in enumerate(numeral):\n    v = values[c]\n"
     "    total += -v if i + 1 < len(numeral) and values[numeral[i + 1]] > v else v\nreturn total",
     [("'XIV'", "14"), ("'MCMXCIV'", "1994"), ("'III'", "3"), ("'XL'", "40")]),
    ("int_to_roman(n: int) -> str", "The Roman numeral of 1 <= n <= 3999.",
     "table = [(1000, 'M'), (900, 'CM'), (500, 'D'), (400, 'CD'), (100, 'C'), (90, 'XC'), (50, 'L'), (40, 'XL'),\n"
     "         (10, 'X'), (9, 'IX'), (5, 'V'), (4, 'IV'), (1, 'I')]\nout = ''\nfor value, letters in table:\n"
     "    while n >= value:\n        out += letters\n        n -= value\nreturn out",
     [("14", "'XIV'"), ("1994", "'MCMXCIV'"), ("3999", "'MMMCMXCIX'"), ("4", "'IV'")]),
    ("balanced(text: str) -> bool", "Whether the brackets (), [] and {} in text are balanced and properly nested.",
     "pairs, stack = {')': '(', ']': '[', '}': '{'}, []\nfor c in text:\n    if c in '([{':\n"
     "        stack.append(c)\n    elif c in pairs:\n        if not stack or stack.pop() != pairs[c]:\n"
     "            return False\nreturn not stack",
     [("'([]{})'", "True"), ("'([)]'", "False"), ("''", "True"), ("'(('", "False"), ("'a(b)c'", "True")]),
    ("common_prefix(words: list) -> str", "The longest common prefix of the strings in words ('' for no words).",
     "if not words:\n    return ''\nprefix = words[0]\nfor word in words[1:]:\n"
     "    while not word.startswith(prefix):\n        prefix = prefix[:-1]\nreturn prefix",
     [("['flower', 'flow', 'flight']", "'fl'"), ("['dog', 'car']", "''"), ("[]", "''"), ("['same']", "'same'")]),
    ("squeeze(items: list) -> list", "items with runs of equal consecutive values collapsed to one.",
     "return [x for i, x in enumerate(items) if i == 0 or items[i - 1] != x]",
     [("[1, 1, 2, 2, 2, 1]", "[1, 2, 1]"), ("[]", "[]"), ("['a', 'a']", "['a']")]),
    ("count_pairs(nums: list, target: int) -> int", "Number of index pairs i < j with nums[i] + nums[j] == target.",
     "return sum(nums[i] + nums[j] == target for i in range(len(nums)) for j in range(i + 1, len(nums)))",
     [("[1, 2, 3, 4], 5", "2"), ("[1, 1, 1], 2", "3"), ("[], 0", "0")]),
    ("max_subarray(nums: list) -> int", "The largest sum of a non-empty contiguous part of nums.",
     "best = current = nums[0]\nfor x in nums[1:]:\n    current = max(x, current + x)\n    best = max(best, current)\n"
     "return best", [("[-2, 1, -3, 4, -1, 2, 1, -5, 4]", "6"), ("[-3, -1]", "-1"), ("[5]", "5")]),
    ("digital_root(n: int) -> int", "Repeatedly sum the digits of the non-negative n until one digit is left.",
     "while n >= 10:\n    n = sum(int(d) for d in str(n))\nreturn n", [("942", "6"), ("0", "0"), ("99999", "9")]),
    ("running_total(nums: list) -> list", "The cumulative sums of nums.",
     "out, total = [], 0\nfor x in nums:\n    total += x\n    out.append(total)\nreturn out",
     [("[1, 2, 3]", "[1, 3, 6]"), ("[]", "[]"), ("[5, -5, 5]", "[5, 0, 5]")]),
    ("median(nums: list) -> float", "The median of a non-empty list of numbers.",
     "s = sorted(nums)\nmid = len(s) // 2\nreturn s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2",
     [("[3, 1, 2]", "2"), ("[4, 1, 3, 2]", "2.5"), ("[7]", "7")]),
    ("clamp(x: float, low: float, high: float) -> float", "x limited to the interval [low, high].",
     "return max(low, min(x, high))", [("5, 0, 10", "5"), ("-3, 0, 10", "0"), ("12, 0, 10", "10")]),
    ("is_leap_year(year: int) -> bool", "Whether year is a leap year in the Gregorian calendar.",
     "return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)",
     [("2024", "True"), ("1900", "False"), ("2000", "True"), ("2023", "False")]),
    ("sum_of_squares(n: int) -> int", "1^2 + 2^2 + ... + n^2.",
     "return sum(i * i for i in range(1, n + 1))", [("3", "14"), ("0", "0"), ("10", "385")]),
    ("dedupe(items: list) -> list", "items without repeats, keeping the first occurrence of each.",
     "seen, out = set(), []\nfor x in items:\n    if x not in seen:\n        seen.add(x)\n        out.append(x)\n"
     "return out", [("[3, 1, 3, 2, 1]", "[3, 1, 2]"), ("[]", "[]"), ("['b', 'a', 'b']", "['b', 'a']")]),
]


def python_problems() -> list[dict]:
    """The problems as HumanEval rows: task_id, prompt, canonical_solution, test, entry_point."""
    rows = []
    for i, (signature, description, body, calls) in enumerate(PROBLEMS):
        name = signature.split("(", 1)[0]
        examples = "".join(f"    >>> {name}({args})\n    {result}\n" for args, result in calls[:2])
        prompt = f'def {signature}:\n    """{description}\n\n{examples}    """\n'
        solution = "".join(f"    {line}\n" if line else "\n" for line in body.split("\n"))
        asserts = "".join(f"    assert candidate({args}) == {result}\n" for args, result in calls)
        rows.append({"task_id": f"llmlab/{i}", "prompt": prompt, "canonical_solution": solution,
                     "test": "def check(candidate):\n" + asserts, "entry_point": name})
    return rows
