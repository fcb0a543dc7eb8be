"""exec.replay: a measured run laid out again on its ops' CPU times; analysis.check's gate time."""
from analysis.check import gate_time
from exec.replay import cpu_latency


def _rows(plan, cpu_of):
    rows, cpu = [], []
    for d, order in enumerate(plan.orders):
        for i in order:
            op = plan.ops[i]
            rows.append((i, op.kind, op.phase, op.layer, d, 0.0, 0.0, 0))
            cpu.append(cpu_of(i, d))
    return rows, cpu


def test_one_device_replays_to_the_sum_of_its_cpu_times(tiny_plan):
    plan = tiny_plan("single", 1)
    rows, cpu = _rows(plan, lambda i, d: 0.01 * (1 + i % 3))
    assert abs(cpu_latency(plan, rows, cpu, []) - sum(cpu)) < 1e-9


def test_several_devices_wait_for_transfers_and_limb_partners(tiny_plan):
    for strategy in ("token", "limb", "tensor"):
        plan = tiny_plan(strategy, 2)
        rows, cpu = _rows(plan, lambda i, d: 0.01 + 0.001 * d)
        busy = [sum(c for r, c in zip(rows, cpu) if r[4] == d) for d in range(2)]
        t = cpu_latency(plan, rows, cpu, [])
        assert max(busy) - 1e-9 <= t <= sum(busy) + 1e-9, strategy
        # a transfer's posting time delays its consumers
        comm = [(c.id, c.kind, c.phase, c.layer, 0.0, 1.0, 0, "") for c in plan.comm if not c.internal]
        if comm:
            assert cpu_latency(plan, rows, cpu, comm) > t + 0.5
        if strategy == "limb":              # a limb-split op ends with its slowest participant
            assert t >= sum(0.011 for d in range(2) for i in plan.orders[1]) / 2


def test_the_gate_uses_cpu_time_where_the_run_has_it():
    assert gate_time({"latency_s": 9.0, "cpu_latency_s": 4.0}) == ("cpu", 4.0)
    assert gate_time({"latency_s": 9.0}) == ("wall", 9.0)
