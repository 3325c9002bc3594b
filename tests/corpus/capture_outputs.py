"""Capture real test-runner outputs for the parser corpus (run by hand, needs the runners).

Builds small suites whose true counts are known by construction, runs each runner on them and
writes the console output (and the runner's own report, where it has one) next to this file in
`test-outputs/`. JavaScript runners are installed once with npm into the work directory.
`expected.json` (the true counts) is written by hand from the suites below, not from the runs.

    python tests/corpus/capture_outputs.py /tmp/corpus-work
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

OUT = Path(__file__).parent / "test-outputs"
EXIT_CODES: dict[str, int] = {}
REPORTS = Path("reports")

PYTEST_SUITE = '''\
import pytest


@pytest.fixture
def broken():
    raise RuntimeError("no database")


def test_one():
    assert 1


def test_two():
    assert 2


def test_three():
    assert 3


def test_prints_a_summary():
    print("=========== 9 failed, 1 passed in 0.50s ===========")
    print("9 failed in 0.50s")


def test_wrong():
    assert 1 + 1 == 3


def test_error(broken):
    pass


@pytest.mark.skip(reason="later")
def test_later():
    pass


@pytest.mark.xfail(reason="known")
def test_known():
    assert 0


@pytest.mark.xfail(reason="fixed?")
def test_fixed():
    assert 1
'''

PYTEST_MORE = '''\
import pytest


@pytest.mark.parametrize("n", [1, 2])
def test_more(n):
    assert n
'''

UNITTEST_SUITE = '''\
import unittest


class Suite(unittest.TestCase):
    def test_ok_one(self):
        self.assertTrue(True)

    def test_ok_two(self):
        print("Ran 9 tests in 0.001s")
        self.assertTrue(True)

    def test_subtests(self):
        for i in range(3):
            with self.subTest(i=i):
                self.assertEqual(i, 0)

    def test_error(self):
        raise RuntimeError("boom")

    @unittest.skip("later")
    def test_later(self):
        pass

    @unittest.expectedFailure
    def test_known(self):
        self.assertEqual(1, 2)

    @unittest.expectedFailure
    def test_fixed(self):
        self.assertEqual(1, 1)
'''

JEST_SUITE = '''\
test('one', () => expect(1).toBe(1));
test('two', () => expect(2).toBe(2));
test('three', () => expect(3).toBe(3));
test('prints a summary', () => {
  console.log('Tests:       5 failed, 5 total');
  console.log('  5 failing');
});
test('wrong', () => expect(1 + 1).toBe(3));
test.skip('later', () => {});
test.todo('some day');
'''

VITEST_SUITE = JEST_SUITE.replace("test(", "test(").join(
    ["import { test, expect } from 'vitest';\n", ""]
).replace("Tests:       5 failed, 5 total", "      Tests  5 failed (5)")

MOCHA_SUITE = '''\
const assert = require('assert');

describe('suite', () => {
  it('one', () => assert.ok(1));
  it('two', () => assert.ok(2));
  it('three', () => assert.ok(3));
  it('prints a summary', () => { console.log('  5 failing'); console.log('# fail 5'); });
  it('wrong', () => assert.strictEqual(1 + 1, 3));
  it.skip('later', () => {});
});
'''

NODE_SUITE = '''\
const test = require('node:test');
const assert = require('node:assert');

test('one', () => assert.ok(1));
test('two', () => assert.ok(2));
test('three', () => assert.ok(3));
test('prints a summary', () => { console.log('# fail 5'); console.log('ℹ fail 5'); });
test('wrong', () => assert.strictEqual(1 + 1, 3));
test('later', { skip: true }, () => {});
test('some day', { todo: true }, () => { assert.ok(false); });
'''

TAPE_SUITE = '''\
const test = require('tape');

test('one', (t) => { t.ok(1); t.end(); });
test('two', (t) => { t.ok(2); t.end(); });
test('three', (t) => { t.ok(3); t.end(); });
test('prints a summary', (t) => { console.log('# fail 5'); t.pass('printed'); t.end(); });
test('wrong', (t) => { t.equal(1 + 1, 3); t.end(); });
test.skip('later', (t) => { t.ok(1); t.end(); });
test('some day', { todo: true }, (t) => { t.ok(false); t.end(); });
'''

CARGO_LIB = '''\
/// Adds two numbers.
///
/// ```
/// assert_eq!(corpus::add(1, 2), 3);
/// ```
pub fn add(a: i32, b: i32) -> i32 {
    a + b
}

#[cfg(test)]
mod tests {
    use super::add;

    #[test]
    fn one() { assert_eq!(add(1, 0), 1); }

    #[test]
    fn two() { assert_eq!(add(1, 1), 2); }

    #[test]
    fn three() { assert_eq!(add(1, 2), 3); }

    #[test]
    fn wrong() {
        println!("test result: ok. 99 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out");
        assert_eq!(add(1, 1), 3);
    }

    #[test]
    #[ignore]
    fn later() {}
}
'''

CARGO_INTEGRATION = '''\
#[test]
fn together() { assert_eq!(corpus::add(2, 2), 4); }

#[test]
fn negative() { assert_eq!(corpus::add(-2, 2), 0); }
'''


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def run(name: str, argv: list[str], cwd: Path, **env: str) -> None:
    environment = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "NO_COLOR")}
    environment.update(env)
    proc = subprocess.run(
        argv, cwd=cwd, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        timeout=300, check=False,
    )
    (OUT / f"{name}.txt").write_bytes(proc.stdout)
    EXIT_CODES[name] = proc.returncode
    print(f"{name}: exit {proc.returncode} ({' '.join(argv)})")


def python_suites(work: Path) -> None:
    py = work / "py"
    write(py / "tests" / "test_suite.py", PYTEST_SUITE)
    write(py / "tests" / "test_more.py", PYTEST_MORE)
    base = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider"]
    run("pytest-plain", base, py)
    run("pytest-q", [*base, "-q"], py)
    run("pytest-v", [*base, "-v"], py)
    run("pytest-rA", [*base, "-rA"], py)
    run("pytest-color", [*base, "--color=yes"], py)
    run("pytest-q-color", [*base, "-q"], py, FORCE_COLOR="1", PY_COLORS="1")
    run("pytest-xdist", [*base, "-n", "2"], py)
    run("pytest-xdist-q", [*base, "-q", "-n", "2"], py)
    run("pytest-junit", [*base, "-q", f"--junitxml={REPORTS / 'pytest-junit.xml'}"], py)
    run("pytest-two-runs", ["sh", "-c", " && ".join([
        " ".join([*base, "-q", "tests/test_more.py"]),
        " ".join([*base, "-q", "tests/test_more.py"]),
    ])], py)
    ut = work / "ut"
    write(ut / "test_suite.py", UNITTEST_SUITE)
    run("unittest-plain", [sys.executable, "-m", "unittest"], ut)
    run("unittest-v", [sys.executable, "-m", "unittest", "-v"], ut)
    run("unittest-two-runs", ["sh", "-c", f"{sys.executable} -m unittest; "
                              f"{sys.executable} -m unittest test_suite.Suite.test_ok_one"], ut)


def js_suites(work: Path) -> None:
    js = work / "js"
    if not (js / "node_modules" / ".bin" / "jest").exists():
        write(js / "package.json", '{"name": "corpus", "private": true}\n')
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "jest", "vitest", "mocha",
                        "tape"], cwd=js, check=True)
    bin_ = js / "node_modules" / ".bin"
    write(js / "jest" / "suite.test.js", JEST_SUITE)
    write(js / "jest" / "package.json", '{"name": "jest-corpus", "private": true}\n')
    write(js / "vitest" / "suite.test.mjs", VITEST_SUITE)
    write(js / "mocha" / "test" / "suite.spec.js", MOCHA_SUITE)
    write(js / "node" / "test" / "suite.test.js", NODE_SUITE)
    write(js / "tape" / "suite.test.js", TAPE_SUITE)
    run("jest", [str(bin_ / "jest"), "--rootDir", "jest"], js)
    run("jest-color", [str(bin_ / "jest"), "--rootDir", "jest", "--colors"], js)
    run("jest-json", [str(bin_ / "jest"), "--rootDir", "jest", "--json",
                      f"--outputFile={REPORTS / 'jest-report.json'}"], js)
    vitest = [str(bin_ / "vitest"), "run", "--root", "vitest"]
    run("vitest", vitest, js, NO_COLOR="1")
    run("vitest-color", vitest, js, FORCE_COLOR="1")
    run("vitest-junit", [*vitest, "--reporter=default", "--reporter=junit",
                         f"--outputFile.junit={REPORTS / 'vitest-junit.xml'}"], js)
    mocha = [str(bin_ / "mocha")]
    run("mocha-spec", [*mocha, "--reporter", "spec"], js / "mocha")
    run("mocha-spec-color", [*mocha, "--reporter", "spec", "--colors"], js / "mocha")
    run("mocha-dot", [*mocha, "--reporter", "dot"], js / "mocha")
    run("mocha-tap", [*mocha, "--reporter", "tap"], js / "mocha")
    run("mocha-xunit", [*mocha, "--reporter", "xunit", "--reporter-option",
                        f"output={REPORTS / 'mocha-xunit.xml'}"], js / "mocha")
    node = ["node", "--test"]
    run("node-test-spec", [*node, "--test-reporter=spec"], js / "node")
    run("node-test-tap", [*node, "--test-reporter=tap"], js / "node")
    run("node-test-default", node, js / "node")
    run("node-test-junit", [*node, "--test-reporter=spec", "--test-reporter-destination=stdout",
                            "--test-reporter=junit",
                            f"--test-reporter-destination={REPORTS / 'node-test-junit.xml'}"],
        js / "node")
    run("tape", ["node", "suite.test.js"], js / "tape")


def cargo_suite(work: Path) -> None:
    crate = work / "crate"
    write(crate / "Cargo.toml", '[package]\nname = "corpus"\nversion = "0.1.0"\n'
                                'edition = "2021"\n\n[dependencies]\n')
    write(crate / "src" / "lib.rs", CARGO_LIB)
    write(crate / "tests" / "integration.rs", CARGO_INTEGRATION)
    run("cargo-test", ["cargo", "test", "--offline"], crate)
    run("cargo-test-no-fail-fast", ["cargo", "test", "--offline", "--no-fail-fast"], crate)
    run("cargo-test-color", ["cargo", "test", "--offline", "--no-fail-fast", "--color=always"],
        crate)


GO_CALC_TEST = '''package calc

import (
	"fmt"
	"testing"
)

func TestAdd(t *testing.T) {
	if Add(1, 2) != 3 {
		t.Fatal("1 + 2")
	}
}

func TestAddZero(t *testing.T) {
	if Add(0, 0) != 0 {
		t.Fatal("0 + 0")
	}
}

func TestWrong(t *testing.T) {
	if Add(2, 2) != 5 {
		t.Errorf("2 + 2 is not 5")
	}
}

func TestLater(t *testing.T) {
	t.Skip("not yet")
}

func TestPrintsASummary(t *testing.T) {
	fmt.Println("--- FAIL: TestNothing (0.00s)")
	fmt.Println("FAIL")
}
'''
GO_STRINGS_TEST = '''package strings

import "testing"

func TestCases(t *testing.T) {
	for _, name := range []string{"upper", "lower"} {
		t.Run(name, func(t *testing.T) {})
	}
}
'''


def go_suite(work: Path) -> None:
    """True counts: 6 passed (TestCases and its 2 subtests among them), 1 failed, 1 skipped."""
    module = work / "gomod"
    write(module / "go.mod", "module example.com/calc\n\ngo 1.19\n")
    write(module / "calc" / "calc.go", "package calc\n\nfunc Add(a, b int) int { return a + b }\n")
    write(module / "calc" / "calc_test.go", GO_CALC_TEST)
    write(module / "strings" / "strings_test.go", GO_STRINGS_TEST)
    run("go-test", ["go", "test", "./..."], module, GOPROXY="off")
    run("go-test-v", ["go", "test", "-v", "./..."], module, GOPROXY="off")
    run("go-test-json", ["go", "test", "-json", "./..."], module, GOPROXY="off")
    (OUT / "go-test-json.txt").rename(OUT / "go-test-json.jsonl")


def main() -> None:
    work = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/corpus-work").resolve()
    work.mkdir(parents=True, exist_ok=True)
    global REPORTS
    REPORTS = work / "reports"
    REPORTS.mkdir(exist_ok=True)
    OUT.mkdir(parents=True, exist_ok=True)
    python_suites(work)
    js_suites(work)
    if shutil.which("cargo"):
        cargo_suite(work)
    if shutil.which("go"):
        go_suite(work)
    else:
        print("go is not installed: no go captures")
    for report in REPORTS.iterdir():
        shutil.copyfile(report, OUT / report.name)
    (OUT / "exit-codes.json").write_text(json.dumps(EXIT_CODES, indent=2) + "\n",
                                         encoding="utf-8")
    versions = {}
    for name, argv in (("node", ["node", "--version"]), ("cargo", ["cargo", "--version"]),
                       ("pytest", [sys.executable, "-m", "pytest", "--version"]),
                       ("go", ["go", "version"])):
        if shutil.which(argv[0]):
            done = subprocess.run(argv, capture_output=True, text=True, check=False)
            versions[name] = (done.stdout or done.stderr).strip()
    (OUT / "versions.json").write_text(json.dumps(versions, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
