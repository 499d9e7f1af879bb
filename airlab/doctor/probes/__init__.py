"""Framework probe scripts. Each runs as `python <file> '<json options>'` in its own process.

They import nothing from airlab (so a broken airlab cannot hide a working framework, and the
doctor process itself never imports a framework) and print, after every stage, one line
`AIRLAB_PROBE {json}` with everything learned so far: if the framework hangs or crashes midway,
the doctor still reports what the last stage saw.
"""
