from counterarg.training.machine import cpu_model

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC
flags\t\t: fpu avx2

processor\t: 1
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: Other
"""


def test_cpu_model_names_family_and_model_of_the_first_processor():
    """ "AMD EPYC" alone does not tell Zen 3 (no bf16 units) from Zen 4; family and model do."""
    assert cpu_model(CPUINFO) == "AMD EPYC (family 25, model 1)"


def test_cpu_model_without_family_is_the_name_alone():
    assert cpu_model("processor\t: 0\nmodel name\t: Some CPU\n") == "Some CPU"


def test_cpu_model_of_this_machine_is_not_empty():
    assert cpu_model().strip()
