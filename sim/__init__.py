"""sim: a simpy model of GPUs and interconnects that predicts a Plan's latency, communication and memory."""
