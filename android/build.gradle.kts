// Android library module wrapping libalembic_ffi over JNI. Build the native libraries first:
//   scripts/build-android.sh        (cargo-ndk -> android/src/main/jniLibs/<abi>/libalembic_ffi.so)
// then include this directory as a module of an app (settings.gradle.kts: include(":alembic");
// project(":alembic").projectDir = file("path/to/alembic/android")).
plugins {
    id("com.android.library") version "8.5.2"
    kotlin("android") version "2.0.20"
}

android {
    namespace = "dev.alembic"
    compileSdk = 34

    defaultConfig {
        minSdk = 24
        consumerProguardFiles("consumer-rules.pro")
        ndk {
            abiFilters += listOf("arm64-v8a", "armeabi-v7a", "x86_64")
        }
    }

    sourceSets["main"].jniLibs.srcDirs("src/main/jniLibs")

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
}

kotlin {
    jvmToolchain(17)
}
