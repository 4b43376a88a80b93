"""worker.evaluation.host: the host line beside every figure (CPU, ISA flags, cores, load) and the speed index."""

from __future__ import annotations

import re

from conftest import CPUINFO
from worker.evaluation import host


def test_host_line_names_the_cpu_and_its_isa_flags(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO.format(flags="avx2 fma avx512f avx512_vnni avx512_bf16 amx_tile amx_int8 avx512vl"))
    line = host.host_line(path=path)
    fields = line.split(" | ")
    assert fields[0] == "host: Test CPU"
    assert fields[1] == "avx2 fma avx512f avx512_vnni avx512_bf16 amx_tile"  # the ones that decide INT8/bf16 speed
    assert fields[2].endswith(" cores") and fields[3].startswith("load ")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\dZ", fields[-1])


def test_host_line_of_an_avx2_only_cpu_and_a_speed_field(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO.format(flags="avx2 fma"))
    assert host.host_line("speed index 9.1 ms", path).split(" | ")[1:5:3] == ["avx2 fma", "speed index 9.1 ms"]
    path.write_text(CPUINFO.format(flags="sse4_1"))
    assert host.host_line(path=path).split(" | ")[1] == "no avx2"
    assert host.host_line(path=tmp_path / "missing").startswith("host: unknown CPU | no avx2 | ")


def test_speed_index_without_a_model_says_so(tmp_path):
    assert host.speed_index(str(tmp_path)).startswith("no speed index")
