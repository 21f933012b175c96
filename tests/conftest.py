"pytest settings shared by the tests."

def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: runs chapters end to end at toy size (minutes); deselect with -m "not slow"')
