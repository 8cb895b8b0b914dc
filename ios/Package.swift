// swift-tools-version:5.9
// Swift package over Alembic's C ABI. Build the binary target first: scripts/build-ios.sh
// (writes ios/AlembicFFI.xcframework from the alembic-ffi staticlib and include/alembic.h).
import PackageDescription

let package = Package(
    name: "Alembic",
    platforms: [.iOS(.v15)],
    products: [.library(name: "Alembic", targets: ["Alembic"])],
    targets: [
        .binaryTarget(name: "AlembicFFI", path: "AlembicFFI.xcframework"),
        .target(name: "Alembic", dependencies: ["AlembicFFI"]),
    ]
)
