# Convenience targets; the build itself is CMake (CONTRACT.md).
.PHONY: all test demo deb clean
all:
	cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo
	cmake --build build -j
test:
	sh scripts/test.sh
demo:
	sh scripts/demo.sh
deb:
	sh packaging/build-deb.sh
clean:
	rm -rf build build-* packaging/out demo
