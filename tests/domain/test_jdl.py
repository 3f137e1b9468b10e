"""The JDL (ClassAd) parser and parametric expansion."""

from __future__ import annotations

import pytest

from jobgate.domain.jdl import JdlError, expand, parameter_values, parse

DIRACX_EXAMPLE = """Arguments = "jobDescription.xml -o LogLevel=INFO";
Executable = "dirac-jobexec";
JobGroup = jobGroup;
JobName = jobName;
JobType = User;
LogLevel = INFO;
OutputSandbox =
    {
        Script1_CodeOutput.log,
        std.err,
        std.out
    };
Priority = 1;
Site = ANY;
StdError = std.err;
StdOutput = std.out;"""


def test_the_diracx_example_jdl() -> None:
    jdl = parse(DIRACX_EXAMPLE)
    assert jdl.get("Executable") == "dirac-jobexec"
    assert jdl.get("Arguments") == "jobDescription.xml -o LogLevel=INFO"
    assert jdl.get("JobGroup") == "jobGroup"
    assert jdl.get("OutputSandbox") == ["Script1_CodeOutput.log", "std.err", "std.out"]
    assert jdl.get("Priority") == 1
    assert jdl.line_of("OutputSandbox") == 7
    assert jdl.line_of("StdOutput") == 16


def test_brackets_comments_and_case_insensitive_names() -> None:
    jdl = parse(
        """[
        // a comment
        # another
        /* a block
           over lines */ executable = "/bin/true";
        CPUTime = 3600;  // seconds
        ]"""
    )
    assert jdl.get("Executable") == "/bin/true"
    assert jdl.get("cputime") == 3600
    assert "EXECUTABLE" in jdl
    assert jdl.line_of("Executable") == 5


def test_numbers_booleans_and_strings() -> None:
    jdl = parse(
        'A = -2.5; B = 1e3; C = 42; D = true; E = False; F = "say \\"hi\\"\\n"; G = {}; H = +7;'
    )
    assert jdl.attributes == {
        "A": -2.5,
        "B": 1000.0,
        "C": 42,
        "D": True,
        "E": False,
        "F": 'say "hi"\n',
        "G": [],
        "H": 7,
    }


def test_lists_of_mixed_values_and_last_semicolon_optional() -> None:
    jdl = parse('Tags = {"a", 2, b.c, true}\n')
    assert jdl.get("Tags") == ["a", 2, "b.c", True]


def test_lfn_bare_words() -> None:
    jdl = parse("InputData = {LFN:/vo/user/file.dat};")
    assert jdl.get("InputData") == ["LFN:/vo/user/file.dat"]


def test_string_spanning_lines_keeps_counting_lines() -> None:
    jdl = parse('A = "one\ntwo";\nB = 1;')
    assert jdl.get("A") == "one\ntwo"
    assert jdl.line_of("B") == 3


@pytest.mark.parametrize(
    ("text", "attribute", "line", "what"),
    [
        ('Executable = "x"', None, None, None),  # valid: no trailing ';' needed
        ('Executable = "x";\nArguments = ;', "Arguments", 2, "expected a value"),
        ('Executable = "x";\nArguments = "unterminated;', None, 2, "unterminated string"),
        ('Executable = "x";\nOutputSandbox = {a, b;', "OutputSandbox", 2, "expected ',' or '}'"),
        ("Executable = {a, {b}};", "Executable", 1, "nested"),
        ('Executable = "x";\n\nexecutable = "y";', "executable", 3, "defined twice"),
        ('Executable "x";', "Executable", 1, "expected '='"),
        ('Executable = "x" Arguments = "y";', "Executable", 1, "expected ';'"),
        ('[ Executable = "x";', None, 1, "closing ']'"),
        ('[ Executable = "x"; ] extra', None, 1, "after ']'"),
        ('/* never closed\nExecutable = "x";', None, 1, "unterminated /*"),
        ('Executable = "x";\n= 3;', None, 2, "attribute name"),
        ('Executable = "x";\nCPUTime = 10s;', None, 2, "unexpected character"),
        ("", None, 1, "no attribute"),
        ("// only a comment", None, 1, "no attribute"),
        ('Executable = "x"; Weird! = 1;', None, 1, "unexpected character"),
    ],
)
def test_errors_name_the_attribute_and_line(
    text: str, attribute: str | None, line: int | None, what: str | None
) -> None:
    if what is None:
        parse(text)
        return
    with pytest.raises(JdlError) as err:
        parse(text)
    assert err.value.attribute == attribute
    assert err.value.line == line
    assert what in str(err.value)
    if attribute:
        assert f"attribute {attribute}" in str(err.value)
    assert f"line {line}" in str(err.value)


def test_parametric_list_substitutes_value_and_index() -> None:
    jobs = expand(
        parse('Executable = "run"; Arguments = "-p %s -i %n"; Parameters = {"x", 7};'), cap=20
    )
    assert [j.get("Arguments") for j in jobs] == ["-p x -i 0", "-p 7 -i 1"]
    assert [j.get("Parameter") for j in jobs] == ["x", 7]
    assert all("Parameters" not in j for j in jobs)


def test_parametric_count_with_start_step_factor() -> None:
    jdl = parse(
        'Executable = "run"; Arguments = "%s"; Parameters = 4; '
        "ParameterStart = 1; ParameterStep = 2; ParameterFactor = 3;"
    )
    # value(i+1) = value(i) * factor + step: 1, 5, 17, 53
    assert parameter_values(jdl, 20) == [1, 5, 17, 53]
    assert [j.get("Arguments") for j in expand(jdl, 20)] == ["1", "5", "17", "53"]


def test_parametric_count_defaults_and_reals() -> None:
    jdl = parse("Executable = x; Parameters = 3; ParameterStart = 0.5; ParameterStep = 0.25;")
    assert parameter_values(jdl, 20) == [0.5, 0.75, 1]


def test_parametric_substitution_in_lists() -> None:
    jobs = expand(parse('Executable = x; OutputSandbox = {"out_%n.txt"}; Parameters = 2;'), 20)
    assert [j.get("OutputSandbox") for j in jobs] == [["out_0.txt"], ["out_1.txt"]]


def test_not_parametric_is_itself() -> None:
    jdl = parse("Executable = x;")
    assert expand(jdl, 1) == [jdl]


@pytest.mark.parametrize(
    ("text", "attribute", "what"),
    [
        ("Executable = x; Parameters = 21;", "Parameters", "at most 20 jobs"),
        ("Executable = x; Parameters = {" + ",".join("a" * 21) + "};", "Parameters", "at most 20"),
        ("Executable = x; Parameters = 0;", "Parameters", "positive"),
        ("Executable = x; Parameters = {};", "Parameters", "empty"),
        ('Executable = x; Parameters = "3";', "Parameters", "positive"),
        ("Executable = x; ParameterStep = 2;", "ParameterStep", "without 'Parameters'"),
        ('Executable = x; Parameters = 2; ParameterStart = "a";', "ParameterStart", "number"),
        (
            "Executable = x; Parameters = 20; ParameterStart = 1; ParameterFactor = 1e200;",
            "ParameterFactor",
            "grow",
        ),
    ],
)
def test_parametric_errors(text: str, attribute: str, what: str) -> None:
    with pytest.raises(JdlError) as err:
        expand(parse(text), cap=20)
    assert err.value.attribute == attribute
    assert err.value.line == 1
    assert what in str(err.value)
