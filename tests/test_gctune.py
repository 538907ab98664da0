import gc

from twisted.internet.task import Clock

from rig.gctune import YOUNG_THRESHOLD, tune_after_start, tune_once_running


class StartingReactor(Clock):
    running = False

    def __init__(self):
        super().__init__()
        self.when_running = []

    def callWhenRunning(self, f, *args):
        self.when_running.append(f)


def test_start_up_objects_are_frozen_and_the_young_generation_is_wider():
    threshold = gc.get_threshold()
    try:
        tune_after_start()
        assert gc.get_freeze_count() > 1000
        assert gc.get_threshold() == (YOUNG_THRESHOLD, *threshold[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


def test_only_a_process_about_to_run_is_tuned():
    starting = StartingReactor()
    tune_once_running(starting)
    assert starting.when_running == [tune_after_start]
    running = StartingReactor()
    running.running = True
    tune_once_running(running)
    assert running.when_running == []
