terraform {
  # 1.9: variable validation may refer to other values (enabled_functions is checked
  # against the manifests found under functions/).
  required_version = ">= 1.9"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.50, < 7"
    }
    # time_sleep: new IAM grants take a while to reach the services that check them.
    time = {
      source  = "hashicorp/time"
      version = ">= 0.12, < 1"
    }
  }
}

provider "google" {
  project = var.project_id
  region  = var.region
}
